"""edgemed's own model zoo: architectures a state_dict checkpoint can name with ``--arch``.

Building one imports torch, so this is conversion-side only.
"""

from __future__ import annotations

from typing import Any

from edgemed.errors import ConversionError

ARCHITECTURES = {
    "cnn": "edgemed.zoo.cnn:SmallCNN",
    "unet": "edgemed.zoo.unet:UNet2D",
    "centernet": "edgemed.zoo.detector:CenterNetLite",
    "ecg_cnn": "edgemed.zoo.ecg:ECGCNN",
    "ecg_rnn": "edgemed.zoo.ecg:ECGRNN",
    "ecg_rr": "edgemed.zoo.ecg:ECGRR",
}


def check_input_shape(module: Any, shape: tuple[int, ...], name: str) -> None:
    """Refuse an input size a zoo architecture cannot take, naming the rule (before any tracing)."""
    multiple = getattr(module, "input_multiple", None)
    if multiple and any(side % multiple for side in shape[2:]):
        fit = "x".join(str(max(multiple, round(side / multiple) * multiple)) for side in shape[2:])
        raise ConversionError(f"--input-shape {'x'.join(map(str, shape))}: the zoo {name} needs sides that are "
                              f"multiples of {multiple}", f"use e.g. --input-shape {shape[0]}x{shape[1]}x{fit}, "
                              "and a resize to that size in the preprocessing spec")


def build(name: str, **kwargs: Any):
    """Instantiate a zoo architecture; unknown names and bad arguments are one-line errors."""
    import importlib

    if name not in ARCHITECTURES:
        raise ConversionError(f"unknown architecture {name!r}", f"--arch must be one of {', '.join(ARCHITECTURES)}")
    module_name, cls_name = ARCHITECTURES[name].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConversionError(f"--arch-args do not fit {name}: {exc}",
                              f"see {ARCHITECTURES[name]} for its constructor arguments") from exc
