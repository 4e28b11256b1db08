"""The kinds of main input a model reads (images, signal windows), each stated once: the layout it converts to,
the words for one case and many, the shapes and preprocessing ops it takes, the data set that holds it, what is
shipped for it and which tools take it.

Why a table: "is this a signal model?" was asked in convert, certify, the pipeline, predict, bench, the Triton
export, the page and ensembles, each comparing the kind's name itself. A kind answers instead; a new kind
(say, a volume) is one class here. Below the manifest, whose vocabulary it gives; imports no backend.
"""

from __future__ import annotations

import importlib
from typing import Any, Literal

from .errors import OptionError


class _Kind:
    set_type: str
    rank: int
    shape_words: str  # what --input-shape must be, in words
    shape_tuple: str  # an example, as Python writes it
    range_fix: str  # the ranges a shape must keep

    def check_shape(self, shape: Any) -> tuple[int, ...]:
        """``--input-shape`` as integers, refused in one line where it cannot be an input of this kind."""
        if (not isinstance(shape, (tuple, list)) or len(shape) != self.rank
                or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)):
            raise OptionError(f"input shape {shape!r} is not {self.shape_words}", f"write e.g. {self.shape_tuple}")
        if any(d < 1 for d in shape) or not self.in_range(shape):
            raise OptionError(f"input shape {tuple(shape)} is out of range", self.range_fix)
        return tuple(shape)

    def in_range(self, shape: tuple[int, ...]) -> bool:
        raise NotImplementedError

    def holds(self, data: Any) -> bool:
        """``data`` (an opened data set) holds cases of this kind."""
        module, cls = self.set_type.split(":")
        return isinstance(data, getattr(importlib.import_module(module), cls))

    def check_holds(self, data: Any, option: str, fix: str) -> None:
        """A data set of another kind is refused in one line, not left to fail as a shape deep in a backend."""
        if not self.holds(data):
            have = next((k.unit for k in INPUT_KINDS.values() if k.holds(data)), "other data")
            raise OptionError(f"{option} {data.path} holds {have}, but the model's input kind is {self.name}", fix)


class ImageKind(_Kind):
    name = "image"
    layouts = ("NCHW", "NHWC")  # what a bundle may declare; conversion writes the first
    item, unit = "image", "images"  # one case, many, in messages
    rank, shape_text, shape_example = 4, "NxCxHxW", "1x1x256x256"  # --input-shape
    export_fix = "export a 4-D image input, or pass --input-kind signal for a 1-D model"  # a model of another rank
    set_type = "edgemed.datasets:ImageSet"
    #: read whole recordings and cut them into cases (predict, bench --record, the demo)
    recordings = False
    #: cases are pictures: Triton serving, the page, ensembles and explanation maps take them
    frames = True
    #: a model of this kind converts with a default preprocessing spec (from its input shape); else it must be given
    default_spec = True
    #: a shipped set any model of this kind calibrates and is judged on (images: the task's, edgemed.samples)
    shipped_calibration: str | None = None
    shipped_verdict: str | None = None

    shape_words, shape_tuple = "four integers N, C, H, W", "(1, 1, 256, 256)"
    range_fix = "N, C >= 1, C <= 64, H and W in 1..8192"

    def in_range(self, shape: tuple[int, ...]) -> bool:
        return shape[1] <= 64 and max(shape[2:]) <= 8192

    def validate_spec(self, spec: list) -> list[dict]:
        from .preprocess import validate_spec

        return validate_spec(spec)


class SignalKind(_Kind):
    name = "signal"
    layouts = ("NCL",)
    item, unit = "beat", "beat windows"
    rank, shape_text, shape_example = 3, "NxCxL", "1x1x180"
    export_fix = "export a 3-D (N, leads, samples) signal input"
    set_type = "edgemed.signal_sets:SignalSet"
    recordings = True
    frames = False
    default_spec = False  # the rate and window a beat model was trained on cannot be guessed
    shipped_calibration = "calibration/ecg_ds1.npz"  # MIT-BIH DS1 beats
    shipped_verdict = "ecg/ds2_beats.npz"  # DS2: patients the shipped ECG models never saw

    shape_words, shape_tuple = "three integers N, C, L", "(1, 1, 180)"  # C leads of L samples
    range_fix = "N, C >= 1, C <= 64 leads, L in 1..1048576"

    def in_range(self, shape: tuple[int, ...]) -> bool:
        return shape[1] <= 64 and shape[2] <= 1 << 20

    def validate_spec(self, spec: list) -> list[dict]:
        from .signal_preprocess import validate_signal_spec

        return validate_signal_spec(spec)


INPUT_KINDS: dict[str, ImageKind | SignalKind] = {k.name: k for k in (ImageKind(), SignalKind())}
INPUT_KIND_NAMES: tuple[str, ...] = tuple(INPUT_KINDS)
InputKindName = Literal[INPUT_KIND_NAMES]  # type: ignore[valid-type]  # the manifest's vocabulary
#: what a model reads unless it says otherwise (the manifest's and convert's default); every task takes it
DEFAULT_INPUT_KIND = ImageKind.name


def input_kind(name: str) -> ImageKind | SignalKind:
    """The kind of that name; an unknown one is refused naming the known ones."""
    try:
        return INPUT_KINDS[name]
    except (KeyError, TypeError):
        raise OptionError(f"--input-kind {name} is not supported", f"use one of {', '.join(INPUT_KIND_NAMES)}") \
            from None

