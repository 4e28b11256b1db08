"""What ``edgemed convert`` is asked to do: one table of options, read by the Python API and the command line.

Each field of :class:`ConvertOptions` carries its option as data (:class:`Option`: the flag, the help text,
the group it belongs to, how the command line's string is parsed, and the check that guards it), so the
``convert`` command is generated from the fields (:func:`click_options`) and the two cannot drift apart
again; a test holds the README's usage block to the same table. Every option is checked here, fail fast,
one line each, before a model is loaded or a file written: field by field beside the field, then the few
rules that relate two fields (:meth:`ConvertOptions._relations`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgemed.backends import PRECISIONS, TARGETS, by_target
from edgemed.errors import OptionError
from edgemed.gate.verdict import Budget, default_budget, default_budgets
from edgemed.input_kinds import DEFAULT_INPUT_KIND, INPUT_KIND_NAMES, input_kind
from edgemed.tasks import TASK_NAMES, TASKS, task_named

DETECTION_LAYOUTS = ("edgemed", "yolo", "torchvision")
NMS_PLACES = ("graph", "host")
CALIB_METHODS = ("minmax", "entropy", "percentile")
OUTPUT_KINDS = ("logits", "probabilities")
EXPLAIN_METHODS = ("cam", "recipro-cam")  # edgemed.converters.explain.METHODS
# The groups convert's options fall in; a task's own options are its group (Task.option_group: detectors' layout,
# NMS and thresholds), so a new task with options of its own adds its group there, not here.
GROUPS = ("model", "outputs", "targets", "data", "gate", *(t.option_group for t in TASKS.values() if t.option_group),
          "tensorrt", "bundle")


@dataclass(frozen=True)
class Option:
    """One convert option as data: its flag, help, group, the parser for the command line's text, the check that
    guards its value (returning the value to keep), and what kind of value click should expect."""

    help: str
    group: str
    flag: str | None = None  # the command-line flag, when it is not --field-name
    parse: Callable[[str], Any] | None = None  # command-line text -> typed value (None: click's type does it)
    check: Callable[[Any], Any] | None = None  # typed value -> value to keep; raises OptionError
    kind: str = "text"  # text | path | int | float | flag | choice
    choices: tuple[str, ...] = ()
    cli: bool = True  # model and out are the command's argument and -o


def opt(default: Any = None, **option: Any) -> Any:
    """A ConvertOptions field with its option."""
    if option["group"] not in GROUPS:  # a typo here would leave an option out of its task's rules
        raise ValueError(f"option group {option['group']!r} is not one of {GROUPS}")
    meta = {"option": Option(**option)}
    if callable(default) and not isinstance(default, (str, Path)):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


# -- checks (value -> value to keep) ----------------------------------------------------------------------

def _choice(allowed: tuple[str, ...], flag: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        return None if value is None else check_choices((value,), allowed, flag)[0]
    return check


def _choices(allowed: tuple[str, ...], flag: str) -> Callable[[Any], Any]:
    return lambda value: check_choices(value, allowed, flag)


def _path(value: Any) -> Path | None:
    return None if value is None else Path(value)


def _required(what: str) -> Callable[[Any], Path]:
    def check(value: Any) -> Path:
        if value is None:
            raise OptionError(f"{what} is required", "pass the model file and the bundle directory (-o)")
        return Path(value)
    return check


def _whole(flag: str, low: int, high: int, fix: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            raise OptionError(f"{flag} {value!r} must be a whole number "
                              + (f">= {low}" if high >= 1 << 30 else f"in {low}..{high}"), fix)
        return value
    return check


def _fraction(flag: str, low: float, high: float, fix: str, open_low: bool = False) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and (
            low < value < high if open_low else low <= value < high)
        if not ok:
            raise OptionError(f"{flag} {value!r} must be a number in {'(' if open_low else '['}{low:g}, {high:g})", fix)
        return value
    return check


def _arch_args(value: Any) -> dict:
    if not isinstance(value, dict):
        raise OptionError("--arch-args must be a JSON object", "write e.g. '{\"base\": 16}'")
    return value


def _budget(value: Any) -> Budget | None:
    if value is not None and not isinstance(value, Budget):
        raise OptionError("budget must be an edgemed.gate.verdict.Budget", "use Budget.parse('agreement>=0.999', task)")
    return value


def _budget_help() -> str:
    defaults = "; ".join(f"{task}: {budget}" for task, budget in default_budgets().items())
    return (f"What every artifact must meet against FP32, e.g. \"lesion_agreement>=0.99,case_dice>=0.99\". Default "
            f"per task: {defaults}.")


@dataclass(frozen=True)
class ConvertOptions:
    model: Path = opt(help="The trained model.", group="model", cli=False, check=_required("the model"))
    out: Path = opt(help="Bundle directory to write.", group="bundle", cli=False, check=_required("-o/--out"))
    task: str = opt(help="What the model does.", group="model", kind="choice", choices=TASK_NAMES,
                    check=_choice(TASK_NAMES, "--task"))
    # NCHW (images) or NCL (signals); optional for ONNX sources
    input_shape: tuple[int, ...] | None = opt(
        help="NxCxHxW, e.g. 1x1x256x256, or NxCxL for signals, e.g. 1x1x180 (optional for ONNX).", group="model")
    input_kind: str = opt(DEFAULT_INPUT_KIND,
                          help="signal: 1-D windows (ECG beats), NCL input, a signal preprocessing spec.",
                          group="model", kind="choice", choices=INPUT_KIND_NAMES,
                          check=_choice(INPUT_KIND_NAMES, "--input-kind"))
    arch: str | None = opt(help="Zoo architecture for a state_dict checkpoint (cnn, unet, centernet, ecg_cnn, "
                                "ecg_rnn).", group="model")
    arch_args: dict[str, Any] = opt(dict, help="JSON constructor arguments for --arch.", group="model",
                                    parse=lambda text: parse_arch_args(text), check=_arch_args)
    allow_pickle: bool = opt(False, help="Allow unpickling a whole nn.Module (runs its code).", group="model",
                             kind="flag")
    features: tuple[tuple[str, tuple[str, ...]], ...] = opt(
        (), help="Inputs beside the main one, NAME=FEATURE,FEATURE,... (';' between inputs), in the model's argument "
                 "order, e.g. rr=rr_pre,rr_post,rr_local,rr_average: a (N, K) float32 input of named numbers per case, "
                 "read by name from the sets' features (a signal set's features/feature_names).", group="model",
        parse=lambda text: parse_features(text), check=lambda v: check_features(v))
    labels: tuple[str, ...] | None = opt(help="Comma-separated class names.", group="outputs",
                                         parse=lambda text: parse_labels(text),
                                         check=lambda v: None if v is None else check_labels(v))
    preprocess: tuple[dict, ...] | None = opt(
        help="Preprocessing spec: a JSON file or JSON text (a list of ops); default for 8-bit images: to_gray or "
             "to_rgb, bilinear resize, scale 1/255.", group="model")
    output: str | None = opt(help="Which output to use, for models with several (default: the only one).",
                             group="outputs")
    output_kind: str | None = opt(
        help="What the model outputs (default: detected from a terminal Softmax/Sigmoid and the outputs).",
        group="outputs", kind="choice", choices=OUTPUT_KINDS, check=_choice(OUTPUT_KINDS, "--output-kind"))
    explain: str | None = opt(help="Saliency maps from the artifacts themselves (r.saliency at run time): cam "
                              "(classifiers ending in global average pooling and one Linear layer; free), "
                              "recipro-cam (any CNN classifier; re-runs the layers after its last convolution on "
                              "masked copies of its feature map, in the graph).", group="outputs",
                              kind="choice", choices=EXPLAIN_METHODS, check=_choice(EXPLAIN_METHODS, "--explain"))
    targets: tuple[str, ...] = opt(("onnx",), help="Targets, comma-separated: onnx, openvino, tensorrt.",
                                   group="targets", flag="--to", parse=lambda text: tuple(text.split(",")),
                                   check=_choices(TARGETS, "--to"))
    precisions: tuple[str, ...] = opt(("fp32",), help="Precisions, comma-separated: fp32, fp16, int8.",
                                      group="targets", flag="--precision", parse=lambda text: tuple(text.split(",")),
                                      check=_choices(PRECISIONS, "--precision"))
    static_shapes: bool = opt(False, help="Fix the batch axis to 1 (OpenVINO NPU needs it).", group="targets",
                              kind="flag")
    calib: Path | None = opt(help="Images (folder or .npz) or signal windows (.npz) that calibrate INT8; the rest "
                                  "tune the fallback and are verdict cases (default: edgemed's shipped samples).",
                             group="data", kind="path", check=_path)
    calib_count: int | None = opt(help="How many --calib images calibrate (default 128, at most half the set).",
                                  group="data", kind="int",
                                  check=_whole("--calib-count", 1, 1 << 40, "leave it out to use the default 128"))
    calib_key: str | None = opt(help="Array name inside a --calib .npz (default: images).", group="data")
    calib_method: str = opt("minmax", help="INT8 calibration: minmax, entropy or percentile.", group="data",
                            kind="choice", choices=CALIB_METHODS, check=_choice(CALIB_METHODS, "--calib-method"))
    eval: Path | None = opt(help="A separate set of (unlabelled) images the verdict is taken on: agreement with FP32 "
                                 "needs no labels, so give it every image you have.", group="gate", kind="path",
                            check=_path)
    eval_key: str | None = opt(help="Array name inside an --eval .npz.", group="gate")
    val: Path | None = opt(help="Labelled images for the clinical gate (accuracy, per-class sensitivity, Dice vs "
                                "ground truth, paired with FP32).", group="gate", kind="path", check=_path)
    val_labels: Path | None = opt(help="Labels for --val: a CSV file,label, a mask folder, or an .npz with "
                                       "labels/masks.", group="gate", kind="path", check=_path)
    val_key: str | None = opt(help="Array name inside a --val .npz.", group="gate")
    margin: float = opt(0.005, help="Non-inferiority margin of the clinical gate (0.005: half a point).",
                        group="gate", kind="float",
                        check=_fraction("--margin", 0, 0.5, "use e.g. 0.005 (0.5 point)", open_low=True))
    budget: Budget | None = opt(help="", group="gate", flag="--drift-budget", check=_budget)
    detection_layout: str | None = opt(
        help="Detectors: what the outputs hold (default: recognised from their number and shapes).",
        group="detector", kind="choice", choices=DETECTION_LAYOUTS,
        check=_choice(DETECTION_LAYOUTS, "--detection-layout"))
    # Host NMS is the default: on the shipped detector it measured 0.5-0.8% (ONNX Runtime) and 3.3-3.5%
    # (OpenVINO) faster per predict than NMS in the graph, in three alternating runs
    # (benchmarks/studies/nms_placement.py), and it needs no NMS op on the backend (TensorRT's differs).
    nms: str | None = opt(help="Detectors: NMS on the host after the engine (default, measured faster) or appended "
                               "to the ONNX graph.", group="detector", kind="choice", choices=NMS_PLACES,
                          check=_choice(NMS_PLACES, "--nms"))
    score_threshold: float = opt(0.25, help="Detectors: keep boxes scoring above this.", group="detector",
                                 kind="float", check=_fraction("--score-threshold", 0, 1, "use e.g. 0.25"))
    iou_threshold: float = opt(0.5, help="Detectors: NMS suppresses same-class boxes overlapping more.",
                               group="detector", kind="float",
                               check=_fraction("--iou-threshold", 0, 1, "use e.g. 0.5"))
    max_detections: int = opt(100, help="Detectors: at most this many boxes per image.", group="detector",
                              kind="int", check=_whole("--max-detections", 1, 10000, "use e.g. 100"))
    dla_core: int | None = opt(help="TensorRT: build for this Jetson DLA core (GPU fallback).", group="tensorrt",
                               kind="int", check=_whole("--dla-core", 0, 7, "use 0 or 1"))
    name: str | None = opt(help="Model name recorded in the bundle (default: the model file's stem).",
                           group="bundle")
    force: bool = opt(False, help="Replace an existing bundle.", group="bundle", kind="flag")

    def __post_init__(self) -> None:
        if self.task is None:
            raise OptionError("--task is required", f"pass one of {', '.join(TASK_NAMES)}")
        for f in dataclasses.fields(self):
            check = f.metadata["option"].check
            if check is not None:
                object.__setattr__(self, f.name, check(getattr(self, f.name)))
        self._relations()

    def _relations(self) -> None:
        """The rules that tie one option to another."""
        _set = object.__setattr__
        task, kind = task_named(self.task), input_kind(self.input_kind)
        if kind.name != DEFAULT_INPUT_KIND and kind.name not in task.other_input_kinds:
            takers = [t.name for t in TASKS.values() if self.input_kind in t.other_input_kinds]
            raise OptionError(f"--input-kind {self.input_kind} supports {' or '.join(takers)}, not {self.task}",
                              f"pass --task {takers[0]}")
        if self.input_shape is not None:
            _set(self, "input_shape", kind.check_shape(self.input_shape))
        if self.preprocess is not None:
            _set(self, "preprocess", tuple(kind.validate_spec(list(self.preprocess))))
        elif not kind.default_spec:
            raise OptionError(f"a {kind.name} model needs its preprocessing spec (the rate and window it was trained "
                              "on)",
                              "pass --preprocess SPEC.json, e.g. [{\"op\": \"resample\", \"fs\": 120}, "
                              "{\"op\": \"window\", \"before_s\": 0.75, \"after_s\": 0.75}]")
        if (self.val is None) != (self.val_labels is None) and not (self.val and self.val.suffix == ".npz"):
            raise OptionError("--val and --val-labels go together", "pass the labelled images and their labels "
                              "(a CSV file,label, a mask folder, or the labels inside a --val .npz)")
        self._own_options_only(task)
        if self.features and (self.explain is not None or not task.takes_features):
            raise OptionError(f"--features with {'--explain' if self.explain else task.plural} is not supported",
                              "convert a model with inputs beside the main one as a classifier or segmenter, without "
                              "--explain")
        if self.explain is not None and (not task.explainable or not kind.frames):
            raise OptionError(f"--explain {self.explain} explains image classifiers, not {kind.name} {self.task}",
                              "drop --explain")

    def _own_options_only(self, task: Any) -> None:
        """Options of another task's group (a detector's layout or NMS), set away from their default, are refused:
        they would be silently ignored."""
        for other in TASKS.values():
            if other is task or other.option_group is None:
                continue
            theirs = [f for f in dataclasses.fields(self) if f.metadata["option"].group == other.option_group]
            given = [option_flag(f) for f in theirs if getattr(self, f.name) != f.default]
            if given:
                raise OptionError(f"{'/'.join(given)}: options that apply to {other.plural}, not to {self.task}",
                                  f"drop them, or pass --task {other.name}")

    @property
    def drift_budget(self) -> Budget:
        return self.budget if self.budget is not None else default_budget(self.task)

    @property
    def backends(self) -> list[str]:
        return [by_target(t).name for t in self.targets]

    @classmethod
    def from_cli(cls, model: Path, out: Path, task: str, **given: Any) -> ConvertOptions:
        """The command line's strings (by flag name: ``to``, ``precision``, ``drift_budget``, or by field name),
        parsed into typed options."""
        kind = input_kind(given.get("input_kind") or DEFAULT_INPUT_KIND)
        by_flag = {option_flag(f).lstrip("-").replace("-", "_"): f for f in dataclasses.fields(cls)}
        typed: dict[str, Any] = {}
        for key, value in given.items():
            f = by_flag.get(key) or next((x for x in dataclasses.fields(cls) if x.name == key), None)
            if f is None:
                raise OptionError(f"unknown convert option {key!r}", "see edgemed convert --help")
            if value is None or value is False:
                continue
            typed[f.name] = _parse(f, value, task, kind)
        return cls(model=model, out=out, task=task, **typed)


def _parse(f: dataclasses.Field, value: Any, task: str, kind: Any) -> Any:
    if not isinstance(value, str):
        return value
    if f.name == "input_shape":
        return parse_shape(value, kind)
    if f.name == "preprocess":
        return read_preprocess(value, kind)
    if f.name == "budget":
        return Budget.parse(value, task)
    option = f.metadata["option"]
    return option.parse(value) if option.parse is not None else value


def option_flag(f: dataclasses.Field) -> str:
    return f.metadata["option"].flag or "--" + f.name.replace("_", "-")


def option_help(f: dataclasses.Field) -> str:
    option = f.metadata["option"]
    if f.name == "budget":
        return _budget_help()
    default = f.default if f.default is not dataclasses.MISSING else None
    shown = default not in (None, False, ()) and option.kind != "flag"
    if isinstance(default, tuple):
        default = ",".join(default)
    return option.help + (f" [default: {default}]" if shown else "")


def cli_fields() -> list[dataclasses.Field]:
    """The fields the command line offers, in the table's order."""
    return [f for f in dataclasses.fields(ConvertOptions) if f.metadata["option"].cli]


def click_options(command: Callable) -> Callable:
    """Decorate a click command with every convert option from the table."""
    import click

    types = {"path": click.Path(path_type=Path), "int": int, "float": float, "text": str}
    for f in reversed(cli_fields()):
        option = f.metadata["option"]
        flag = option_flag(f)
        name = flag.lstrip("-").replace("-", "_")
        if option.kind == "flag":
            command = click.option(flag, name, is_flag=True, help=option_help(f))(command)
        elif option.kind == "choice":
            command = click.option(flag, name, type=click.Choice(option.choices), help=option_help(f),
                                   required=f.name == "task")(command)
        else:
            command = click.option(flag, name, type=types[option.kind], help=option_help(f))(command)
    return command


def parse_shape(text: str, kind: Any = DEFAULT_INPUT_KIND) -> tuple[int, ...]:
    """``--input-shape`` as the command line writes it (``1x1x256x256``), for a model of input ``kind``."""
    kind = input_kind(kind) if isinstance(kind, str) else kind
    if not isinstance(text, str) or not re.fullmatch(r"\s*\d+(\s*x\s*\d+){" + str(kind.rank - 1) + r"}\s*", text):
        raise OptionError(f"--input-shape {text!r} is not {kind.shape_text}", f"write e.g. {kind.shape_example}")
    return kind.check_shape(tuple(int(d) for d in text.lower().split("x")))


def parse_features(text: str | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``rr=rr_pre,rr_post;age=age_years`` -> (("rr", ("rr_pre", "rr_post")), ("age", ("age_years",)))."""
    if not text:
        return ()
    inputs = []
    for part in text.split(";"):
        name, sep, names = part.partition("=")
        if not sep:
            raise OptionError(f"--features {part!r} is not NAME=FEATURE,...", "write e.g. --features "
                              "rr=rr_pre,rr_post,rr_local,rr_average")
        inputs.append((name.strip(), tuple(n.strip() for n in names.split(","))))
    return check_features(tuple(inputs))


def check_features(value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Each input named once, each with distinct non-empty feature names (a dict of name -> names works too)."""
    if isinstance(value, dict):
        value = tuple(value.items())
    fix = "write e.g. features={'rr': ('rr_pre', 'rr_post', 'rr_local', 'rr_average')}"
    try:
        inputs = tuple((str(name), tuple(names)) for name, names in value)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"features {value!r} is not a list of (input name, feature names)", fix) from exc
    names = [n for n, _ in inputs]
    if len(set(names)) != len(names) or not all(names):
        raise OptionError(f"features: input names {names} are not distinct names", fix)
    for name, features in inputs:
        if not features or not all(isinstance(f, str) and f for f in features) or len(set(features)) != len(features):
            raise OptionError(f"features: input {name!r} needs distinct feature names, got {list(features)}", fix)
    return inputs


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


def read_preprocess(value: str | Path | None, kind: Any = DEFAULT_INPUT_KIND) -> tuple[dict, ...] | None:
    """A spec given as a JSON file path, or as JSON text starting with '['; ``kind``: the model's input kind (its
    name or :mod:`edgemed.input_kinds` entry), whose ops the spec may use."""
    kind = input_kind(kind) if isinstance(kind, str) else kind
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
    return tuple(kind.validate_spec(spec))


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
    for target in targets:
        info = by_target(target)
        if not info.installed():
            raise OptionError(f"--to {target}: the {info.package!r} package is not installed here", info.build_install)
