"""``predict`` on hostile frames: arrays of every dtype, rank, size and layout, things that are not arrays, and
files with image extensions (random bytes, damaged PNG/JPEG/TIFF/NPY, real DICOM files with bytes changed,
cut short or a length field blown up)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from edgemed.io.images import read_frames

from ..conftest import DICOM
from . import strategies as fs
from .harness import fuzz_settings, outcome

pytestmark = pytest.mark.fuzz


def _classified(pipe):
    def check(r):
        assert r.label in pipe.labels and len(r.probabilities) == len(pipe.labels)
    return check


def _segmented(frame):
    def check(r):
        assert r.mask.shape == np.shape(frame)[:2]
    return check


# Several frames per example: Hypothesis' own bookkeeping is most of a cheap case's cost, and a list still
# shrinks to the one frame that fails.
@fuzz_settings(600)
@given(frames=st.lists(fs.arrays(), min_size=1, max_size=6))
def test_classifier_arrays(cnn_pipe, frames):
    for frame in frames:
        outcome("predict classifier (arrays)", lambda f=frame: cnn_pipe.predict(f), _classified(cnn_pipe))


@fuzz_settings(90)
@given(frames=st.lists(fs.arrays(), min_size=1, max_size=6))
def test_segmenter_arrays(unet_pipe, frames):
    for frame in frames:
        outcome("predict segmenter (arrays)", lambda f=frame: unet_pipe.predict(f), _segmented(frame))


@fuzz_settings(150)
@given(data=st.data())
def test_objects_that_are_not_frames(cnn_pipe, unet_pipe, tmp_path_factory, data):
    tmp = tmp_path_factory.getbasetemp()
    for thing in data.draw(st.lists(fs.not_arrays(tmp), min_size=1, max_size=6)):
        pipe = data.draw(st.sampled_from([cnn_pipe, unet_pipe]))
        outcome("predict (not a frame)", lambda p=pipe, t=thing: p.predict(t))


@pytest.fixture(scope="module")
def image_seeds(busi, tmp_path_factory) -> list[bytes]:
    """Real frames as PNG (8 and 16 bit), JPEG, TIFF (float and multi-page) and BMP files."""
    d = tmp_path_factory.mktemp("seeds")
    frame = Image.fromarray(busi["images"][3]).resize((48, 40))
    frame.save(d / "a.png")
    Image.fromarray(np.asarray(frame).astype(np.uint16) * 257).save(d / "b.png")
    frame.save(d / "c.jpg", quality=80)
    Image.fromarray(np.asarray(frame).astype(np.float32)).save(d / "d.tif")
    frame.save(d / "e.tif", save_all=True, append_images=[frame.rotate(90)])
    frame.convert("RGB").save(d / "f.bmp")
    frame.convert("P").save(d / "g.png")
    return [p.read_bytes() for p in sorted(d.iterdir())]


@fuzz_settings(400)
@given(data=st.data())
def test_image_files(cnn_pipe, image_seeds, tmp_path_factory, data):
    how = data.draw(st.sampled_from(["seed", "seed", "random", "npy", "npy"]))
    if how == "seed":
        raw = fs.mutate(data.draw(st.sampled_from(image_seeds)), data.draw)
    elif how == "npy":
        raw = data.draw(fs.npy_bytes())
    else:
        raw = data.draw(st.binary(max_size=2048))
    suffix = ".npy" if how == "npy" else data.draw(st.sampled_from(fs.IMAGE_SUFFIXES))
    path = tmp_path_factory.getbasetemp() / f"fuzz-image{suffix}"
    path.write_bytes(raw)
    outcome("predict (image files)", lambda: cnn_pipe.predict(path), _classified(cnn_pipe))
    outcome("read_frames (image files)", lambda: _frames_of(path))


def _frames_of(path: Path) -> list:
    """What ``edgemed predict FILE`` and the DICOM node read: every frame, each a (H,W)/(H,W,3) array."""
    frames = read_frames(path)
    for f in frames:
        assert isinstance(f, np.ndarray) and f.ndim in (2, 3), (type(f), getattr(f, "shape", None))
    return frames


@pytest.fixture(scope="module")
def dicom_seeds(shared_data) -> list[fs.Seed]:
    from pydicom.data import get_testdata_file

    paths = sorted(DICOM.glob("*.dcm")) + [Path(get_testdata_file("waveform_ecg.dcm"))]
    return [fs.Seed(p.name, p.read_bytes(), fs.dicom_length_fields(p.read_bytes())) for p in paths]


@fuzz_settings(300)
@given(data=st.data())
def test_dicom_files(cnn_pipe, unet_pipe, dicom_seeds, tmp_path_factory, data):
    seed = data.draw(st.sampled_from(dicom_seeds))
    raw = fs.mutate(seed.data, data.draw, length_fields=seed.length_fields)
    path = tmp_path_factory.getbasetemp() / f"fuzz{data.draw(st.sampled_from(['.dcm', '.dicom', '']))}"
    path.write_bytes(raw)
    frames = outcome("read_frames (DICOM)", lambda: _frames_of(path))
    pipe = data.draw(st.sampled_from([cnn_pipe, unet_pipe]))
    for frame in (frames or [])[:2]:
        check = _classified(pipe) if pipe.task == "classification" else _segmented(frame)
        outcome("predict (DICOM frames)", lambda f=frame: pipe.predict(f), check)


@fuzz_settings(20, deadline_s=60)
@given(data=st.data())
def test_cli_predict_out(cnn_bundle, image_seeds, dicom_seeds, tmp_path_factory, data):
    """``edgemed predict BUNDLE FILES --out DIR`` (in process, through click): exit 0 or the one-line user error
    (exit 2), never the internal-error exit; and every file in DIR whole (nothing half-written)."""
    import pydicom
    from click.testing import CliRunner
    from PIL import Image

    from edgemed.cli import main

    folder = tmp_path_factory.mktemp("cli")
    files = []
    for i in range(data.draw(st.integers(1, 3))):
        if data.draw(st.booleans()):
            seed = data.draw(st.sampled_from(dicom_seeds))
            raw = fs.mutate(seed.data, data.draw, length_fields=seed.length_fields) if data.draw(st.booleans()) \
                else seed.data
            path = folder / f"in{i}.dcm"
        else:
            raw = fs.mutate(data.draw(st.sampled_from(image_seeds)), data.draw, max_ops=2)
            path = folder / f"in{i}{data.draw(st.sampled_from(['.png', '.tif', '.jpg']))}"
        path.write_bytes(raw)
        files.append(str(path))
    out = folder / "out"
    result = CliRunner().invoke(main, ["predict", str(cnn_bundle), *files, "--out", str(out), "--json"])
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("edgemed: ")
              and not ln.startswith(("edgemed: note", "edgemed: warning"))
              and not re.match(r"edgemed: \d+ of \d+ input file\(s\) not analysed", ln)]  # the closing count
    assert result.exit_code in (0, 2), (result.exit_code, result.stderr[-2000:])
    # one line per file it could not analyse (the others' results are complete), each edgemed's own error
    assert result.exit_code == 0 or (1 <= len(errors) <= len(files) and
                                     all(e.startswith("edgemed: error: ") for e in errors)), result.stderr
    for f in out.rglob("*") if out.exists() else []:
        assert not f.name.startswith("."), f"half-written: {f.name}"
        if f.suffix == ".dcm":
            pydicom.dcmread(f)
        elif f.suffix == ".png":
            Image.open(f).load()
        elif f.suffix == ".json":
            json.loads(f.read_text())
    from .harness import count

    count("edgemed predict --out (CLI)", "result" if result.exit_code == 0 else "refused")
