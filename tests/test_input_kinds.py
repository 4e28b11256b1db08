"""Input kinds (issue 19): images and signal windows each declared once in ``edgemed.input_kinds``; the manifest's
vocabulary, convert's shape and spec checks, the shipped sets and the tools that take a kind all read it."""

from __future__ import annotations

import msgspec
import pytest

from edgemed.datasets import ImageSet
from edgemed.errors import OptionError
from edgemed.input_kinds import INPUT_KIND_NAMES, input_kind
from edgemed.manifest import ModelCard
from edgemed.samples import calibration_set, samples_dir, verdict_set


def test_each_kind_checks_its_own_shapes_and_specs_in_one_line():
    image, signal = input_kind("image"), input_kind("signal")
    assert image.check_shape([1, 1, 256, 256]) == (1, 1, 256, 256)
    assert signal.check_shape((1, 1, 180)) == (1, 1, 180)
    with pytest.raises(OptionError, match=r"not four integers N, C, H, W.*\(1, 1, 256, 256\)"):
        image.check_shape((1, 1, 180))
    with pytest.raises(OptionError, match="not three integers N, C, L"):
        signal.check_shape((1, 1, 64, 64))
    with pytest.raises(OptionError, match="out of range"):
        image.check_shape((1, 1, 9000, 64))
    beat = [{"op": "resample", "fs": 120}, {"op": "window", "before_s": 0.75, "after_s": 0.75}]
    assert signal.validate_spec(beat)[0]["op"] == "resample"
    with pytest.raises(Exception, match="resample"):
        image.validate_spec([{"op": "resample", "fs": 120}])  # a signal op is no image op
    with pytest.raises(OptionError, match="--input-kind audio is not supported.*image, signal"):
        input_kind("audio")


def test_the_manifest_vocabulary_and_the_shipped_sets_follow_the_table():
    assert INPUT_KIND_NAMES == ("image", "signal")
    card = {"name": "m", "task": "classification", "labels": ["a", "b"]}
    assert msgspec.convert({**card, "input_kind": "signal"}, ModelCard).input_kind == "signal"
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({**card, "input_kind": "audio"}, ModelCard)
    beats = ImageSet.open(calibration_set("classification", "signal"))
    assert input_kind("signal").holds(beats) and not input_kind("image").holds(beats)
    assert verdict_set("classification", "signal") == samples_dir("ecg/ds2_beats.npz")
    frames = ImageSet.open(calibration_set("segmentation"))
    assert input_kind("image").holds(frames)
    with pytest.raises(OptionError, match="holds images, but the model's input kind is signal"):
        input_kind("signal").check_holds(frames, "--calib", "pass beats")
    assert input_kind("image").frames and not input_kind("signal").frames  # Triton, the page, ensembles
