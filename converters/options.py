"""Parsing and checking convert's options before any work is done (fail fast, one line each)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from edgemed.errors import InputError
from edgemed.preprocess import validate_spec

TARGETS = ("onnx", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
BACKEND_OF = {"onnx": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}


def parse_shape(text: str) -> list[int]:
    if not isinstance(text, str) or not re.fullmatch(r"\s*\d+(\s*x\s*\d+){3}\s*", text):
        raise InputError(f"--input-shape {text!r} is not NxCxHxW", "write e.g. 1x1x256x256")
    dims = [int(d) for d in text.lower().split("x")]
    if any(d < 1 for d in dims) or dims[1] > 64 or max(dims[2:]) > 8192:
        raise InputError(f"--input-shape {text!r} is out of range", "N, C >= 1, C <= 64, H and W in 1..8192")
    return dims


def parse_labels(text: str | list[str] | None) -> list[str] | None:
    if text is None:
        return None
    labels = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    if not labels or any(not s for s in labels) or len(set(labels)) != len(labels):
        raise InputError(f"--labels {text!r} must be distinct, non-empty names", "write e.g. benign,malignant")
    return labels


def parse_preprocess(value: Any) -> list[dict] | None:
    """A spec given as a JSON file path or as a list already parsed."""
    if value is None:
        return None
    if isinstance(value, (str, Path)) and not str(value).lstrip().startswith("["):
        path = Path(value)
        if not path.is_file():
            raise InputError(f"--preprocess {value}: no such file", "pass a JSON file holding a list of ops")
        try:
            value = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"--preprocess {value}: not valid JSON ({exc})", "fix the JSON file") from exc
    elif isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InputError(f"--preprocess is not valid JSON ({exc})", "fix the JSON") from exc
    return validate_spec(value)


def parse_choices(text: str | list[str], allowed: tuple[str, ...], option: str) -> list[str]:
    items = [s.strip().lower() for s in text.split(",")] if isinstance(text, str) else [s.lower() for s in text]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise InputError(f"{option} {','.join(bad) or text} is not supported",
                         f"choose from {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def check_backends(targets: list[str]) -> None:
    """Refuse a target whose toolchain is not installed here, before any work is done."""
    import importlib.util

    needs = {"openvino": ("openvino", "pip install 'edgemed[openvino]'"),
             "tensorrt": ("tensorrt", "TensorRT engines are built on the target: run this convert on the "
                                      "Jetson/GPU machine where the tensorrt package imports")}
    for target in targets:
        if target in needs and importlib.util.find_spec(needs[target][0]) is None:
            raise InputError(f"--to {target}: the {needs[target][0]!r} package is not installed here", needs[target][1])
