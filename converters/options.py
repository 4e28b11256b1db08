"""What ``edgemed convert`` is asked to do, as one typed record checked before any work is done.

The CLI parses its strings into :class:`ConvertOptions` (:meth:`ConvertOptions.from_cli`); the
Python API builds it from typed values. Either way every option is checked here, fail fast, one
line each, before a model is loaded or a file written.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgemed.errors import OptionError
from edgemed.gate import Budget, default_budget
from edgemed.preprocess import validate_spec

TASKS = ("classification", "segmentation", "detection")
INPUT_KINDS = ("image", "signal")
DETECTION_LAYOUTS = ("edgemed", "yolo", "torchvision")
NMS_PLACES = ("graph", "host")
TARGETS = ("onnx", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
CALIB_METHODS = ("minmax", "entropy", "percentile")
OUTPUT_KINDS = ("logits", "probabilities")
BACKEND_OF = {"onnx": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}


@dataclass(frozen=True)
class ConvertOptions:
    model: Path
    out: Path
    task: str
    input_shape: tuple[int, ...] | None = None  # NCHW (images) or NCL (signals); optional for ONNX sources
    input_kind: str = "image"  # "signal": 1-D windows (ECG beats), NCL, with a signal preprocessing spec
    arch: str | None = None
    arch_args: dict[str, Any] = field(default_factory=dict)
    allow_pickle: bool = False
    labels: tuple[str, ...] | None = None
    preprocess: tuple[dict, ...] | None = None  # None: the documented default for the input shape
    targets: tuple[str, ...] = ("onnx",)
    precisions: tuple[str, ...] = ("fp32",)
    calib: Path | None = None  # None: the shipped sample images
    calib_count: int | None = None
    calib_key: str | None = None
    calib_method: str = "minmax"
    eval: Path | None = None  # a separate set of (unlabelled) images the verdict is taken on
    eval_key: str | None = None
    val: Path | None = None  # labelled images: the clinical gate against ground truth
    val_labels: Path | None = None
    val_key: str | None = None
    margin: float = 0.005  # non-inferiority margin of the clinical gate (0.5 point)
    budget: Budget | None = None  # None: the task's default budget
    static_shapes: bool = False
    dla_core: int | None = None
    output_kind: str | None = None  # None: detected from the graph and the outputs (graph_checks.output_kind)
    output: str | None = None  # which output to use, for models with several
    # Detectors: the outputs' layout (None: recognised from the outputs), where NMS runs, its thresholds.
    detection_layout: str | None = None
    # Host NMS is the default: on the shipped detector it measured 0.5-0.8% (ONNX Runtime) and 3.3-3.5%
    # (OpenVINO) faster per predict than NMS in the graph, in three alternating runs
    # (benchmarks/nms_placement.py), and it needs no NMS op on the backend (TensorRT's differs).
    nms: str | None = None  # None: "host" for detectors
    score_threshold: float = 0.25
    iou_threshold: float = 0.5
    max_detections: int = 100
    name: str | None = None
    force: bool = False

    def __post_init__(self) -> None:
        _set = object.__setattr__
        _set(self, "model", Path(self.model))
        _set(self, "out", Path(self.out))
        if self.task not in TASKS:
            raise OptionError(f"--task {self.task!r} is not supported", f"use one of {', '.join(TASKS)}")
        _set(self, "input_kind", check_choices((self.input_kind,), INPUT_KINDS, "--input-kind")[0])
        signal = self.input_kind == "signal"
        if signal and self.task != "classification":
            raise OptionError(f"--input-kind signal supports classification (beat classifiers), not {self.task}",
                              "pass --task classification")
        if self.input_shape is not None:
            _set(self, "input_shape", check_shape(self.input_shape, signal))
        if self.labels is not None:
            _set(self, "labels", check_labels(self.labels))
        if self.preprocess is not None:
            _set(self, "preprocess", tuple(check_spec(list(self.preprocess), signal)))
        elif signal:
            raise OptionError("a signal model needs its preprocessing spec (the rate and window it was trained on)",
                              "pass --preprocess SPEC.json, e.g. [{\"op\": \"resample\", \"fs\": 120}, "
                              "{\"op\": \"window\", \"before_s\": 0.75, \"after_s\": 0.75}]")
        _set(self, "targets", check_choices(self.targets, TARGETS, "--to"))
        _set(self, "precisions", check_choices(self.precisions, PRECISIONS, "--precision"))
        _set(self, "calib_method", check_choices((self.calib_method,), CALIB_METHODS, "--calib-method")[0])
        if self.output_kind is not None and self.output_kind not in OUTPUT_KINDS:
            raise OptionError(f"--output-kind {self.output_kind!r} is not supported", "use logits or probabilities")
        if self.calib_count is not None and (isinstance(self.calib_count, bool) or not isinstance(self.calib_count, int)
                                             or self.calib_count < 1):
            raise OptionError(f"--calib-count {self.calib_count!r} must be a whole number >= 1",
                              "leave it out to use every calibration image (up to what the quantizers need)")
        if self.dla_core is not None and self.dla_core not in range(8):
            raise OptionError(f"--dla-core {self.dla_core!r} is not a DLA core index", "use 0 or 1")
        if not isinstance(self.arch_args, dict):
            raise OptionError("--arch-args must be a JSON object", "write e.g. '{\"base\": 16}'")
        for name in ("calib", "eval", "val", "val_labels"):
            if getattr(self, name) is not None:
                _set(self, name, Path(getattr(self, name)))
        if (self.val is None) != (self.val_labels is None) and not (self.val and self.val.suffix == ".npz"):
            raise OptionError("--val and --val-labels go together", "pass the labelled images and their labels "
                              "(a CSV file,label, a mask folder, or the labels inside a --val .npz)")
        if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float)) or not 0 < self.margin < 0.5:
            raise OptionError(f"--margin {self.margin!r} is not a non-inferiority margin", "use e.g. 0.005 (0.5 point)")
        if self.detection_layout is not None:
            _set(self, "detection_layout", check_choices((self.detection_layout,), DETECTION_LAYOUTS,
                                                         "--detection-layout")[0])
        if self.nms is not None:
            _set(self, "nms", check_choices((self.nms,), NMS_PLACES, "--nms")[0])
        for option, value in (("--score-threshold", self.score_threshold), ("--iou-threshold", self.iou_threshold)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise OptionError(f"{option} {value!r} must be a number in [0, 1)", "use e.g. 0.25 for scores, 0.5 for "
                                  "IoU")
        if isinstance(self.max_detections, bool) or not isinstance(self.max_detections, int) \
                or not 1 <= self.max_detections <= 10000:
            raise OptionError(f"--max-detections {self.max_detections!r} must be a whole number in 1..10000",
                              "use e.g. 100")
        if self.task != "detection" and (self.detection_layout is not None or self.nms is not None):
            raise OptionError(f"--detection-layout/--nms apply to detectors, not to {self.task}",
                              "drop them, or pass --task detection")
        if self.task == "detection" and self.nms is None:
            _set(self, "nms", "host")
        if self.budget is not None and not isinstance(self.budget, Budget):
            raise OptionError("budget must be an edgemed.gate.Budget", "use Budget.parse('agreement>=0.999', task)")

    @property
    def drift_budget(self) -> Budget:
        return self.budget if self.budget is not None else default_budget(self.task, self.input_kind)

    @property
    def backends(self) -> list[str]:
        return [BACKEND_OF[t] for t in self.targets]

    @classmethod
    def from_cli(cls, model: Path, out: Path, task: str, input_shape: str | None = None, arch_args: str | None = None,
                 labels: str | None = None, preprocess: str | None = None, to: str = "onnx",
                 precision: str = "fp32", drift_budget: str | None = None, **rest: Any) -> ConvertOptions:
        """The command line's strings, parsed into typed options."""
        signal = rest.get("input_kind") == "signal"
        return cls(model=model, out=out, task=task,
                   input_shape=parse_shape(input_shape, signal) if input_shape is not None else None,
                   arch_args=parse_arch_args(arch_args), labels=parse_labels(labels),
                   preprocess=read_preprocess(preprocess, signal), targets=tuple(to.split(",")),
                   precisions=tuple(precision.split(",")),
                   budget=Budget.parse(drift_budget, task) if drift_budget is not None else None,
                   **{k: v for k, v in rest.items() if v is not None})


def parse_shape(text: str, signal: bool = False) -> tuple[int, ...]:
    dims, form, example = (2, "NxCxL", "1x1x180") if signal else (3, "NxCxHxW", "1x1x256x256")
    if not isinstance(text, str) or not re.fullmatch(r"\s*\d+(\s*x\s*\d+){" + str(dims) + r"}\s*", text):
        raise OptionError(f"--input-shape {text!r} is not {form}", f"write e.g. {example}")
    return check_shape(tuple(int(d) for d in text.lower().split("x")), signal)


def check_shape(shape: Any, signal: bool = False) -> tuple[int, ...]:
    rank, form = (3, "three integers N, C, L") if signal else (4, "four integers N, C, H, W")
    if (not isinstance(shape, (tuple, list)) or len(shape) != rank
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)):
        example = "(1, 1, 180)" if signal else "(1, 1, 256, 256)"
        raise OptionError(f"input shape {shape!r} is not {form}", f"write e.g. {example}")
    if signal and (any(d < 1 for d in shape) or shape[1] > 64 or shape[2] > 1 << 20):
        raise OptionError(f"input shape {tuple(shape)} is out of range", "N, C >= 1, C <= 64 leads, L in 1..1048576")
    if not signal and (any(d < 1 for d in shape) or shape[1] > 64 or max(shape[2:]) > 8192):
        raise OptionError(f"input shape {tuple(shape)} is out of range", "N, C >= 1, C <= 64, H and W in 1..8192")
    return tuple(shape)


def check_spec(spec: list, signal: bool) -> list[dict]:
    """An image spec, or (``signal``) a signal spec: each kind has its own ops."""
    if signal:
        from edgemed.signal_preprocess import validate_signal_spec

        return validate_signal_spec(spec)
    return validate_spec(spec)


def parse_labels(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else check_labels(text.split(","))


def check_labels(labels: Any) -> tuple[str, ...]:
    if isinstance(labels, str) or not all(isinstance(s, str) for s in labels):
        raise OptionError(f"labels {labels!r} must be a list of names", "write e.g. ['benign', 'malignant']")
    names = tuple(s.strip() for s in labels)
    if not names or any(not s for s in names) or len(set(names)) != len(names):
        raise OptionError(f"--labels {','.join(names)!r} must be distinct, non-empty names",
                          "write e.g. benign,malignant")
    return names


def parse_arch_args(text: str | None) -> dict:
    if text is None or text == "":
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OptionError(f"--arch-args is not valid JSON ({exc})", "write e.g. '{\"base\": 16}'") from exc
    if not isinstance(parsed, dict):
        raise OptionError("--arch-args must be a JSON object", "write e.g. '{\"base\": 16}'")
    return parsed


def read_preprocess(value: str | Path | None, signal: bool = False) -> tuple[dict, ...] | None:
    """A spec given as a JSON file path, or as JSON text starting with '['."""
    if value is None:
        return None
    if str(value).lstrip().startswith("["):
        text, where = str(value), "--preprocess"
    else:
        path = Path(value)
        if not path.is_file():
            raise OptionError(f"--preprocess {value}: no such file", "pass a JSON file holding a list of ops")
        text, where = path.read_text(), f"--preprocess {value}"
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OptionError(f"{where}: not valid JSON ({exc})", "fix the JSON") from exc
    return tuple(check_spec(spec, signal))


def check_choices(items: Any, allowed: tuple[str, ...], option: str) -> tuple[str, ...]:
    if isinstance(items, str) or not all(isinstance(s, str) for s in items):
        raise OptionError(f"{option} {items!r} must be a list of names", f"choose from {', '.join(allowed)}")
    cleaned = [s.strip().lower() for s in items]
    bad = [s for s in cleaned if s not in allowed]
    if bad or not cleaned:
        raise OptionError(f"{option} {','.join(bad) or '(empty)'} is not supported",
                          f"choose from {', '.join(allowed)}")
    # the allowed constants themselves, not equal copies: msgspec's omit_defaults tells a default by identity,
    # so a parsed "image" would otherwise be written into every manifest
    return tuple(dict.fromkeys(allowed[allowed.index(s)] for s in cleaned))


def check_backends(targets: tuple[str, ...]) -> None:
    """Refuse a target whose toolchain is not installed here, before any work is done."""
    needs = {"openvino": ("openvino", "pip install 'edgemed[openvino]'"),
             "tensorrt": ("tensorrt", "TensorRT engines are built on the target: run this convert on the "
                                      "Jetson/GPU machine where the tensorrt package imports")}
    for target in targets:
        if target in needs and importlib.util.find_spec(needs[target][0]) is None:
            raise OptionError(f"--to {target}: the {needs[target][0]!r} package is not installed here",
                              needs[target][1])
