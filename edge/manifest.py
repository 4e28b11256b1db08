"""The bundle manifest (``edgemed.json``) as typed code: its one reader and its one writer.

Every other module works with these records, never with the JSON dict. ``Manifest.from_json``
does all validation at the edge (every field's type and range, then the cross-references
between fields) and raises :class:`BundleError` naming the field; ``Manifest.to_json`` is the
only writer. The records are msgspec ``Struct`` classes: msgspec decodes and validates typed
records with the offending field's path in its message, and derives the JSON Schema shipped
as ``manifest.schema.json`` (MONAI bundles publish theirs the same way), so the schema and the
code cannot drift apart (a test regenerates and compares it).

Schema history: version 1 (edgemed 0.1.0) kept drift as a free dict with ``passed: bool``;
version 2 types every record and adds verdicts with case counts and bounds, and the
TensorRT build options the gate measured; version 3 (edgemed 0.3) records where a verdict was measured
and the precision the engine computed in there; ``explain`` (issue 22) and ``features`` (issue 21: inputs beside
the main one) are optional, so version 3 without them is every earlier version-3 manifest. Version-1
manifests are migrated on read; version 2 is version 3 without the new optional fields.
"""



import copy
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from .backends import Backend, Precision
from .errors import BundleError
from .input_kinds import DEFAULT_INPUT_KIND, InputKindName, input_kind
from .task_names import TASK_FACTS, TaskName

SCHEMA_VERSION = 3
SCHEMA_FILE = Path(__file__).with_name("manifest.schema.json")
MAX_INPUT_ELEMENTS = 1 << 28  # 268M floats (1 GiB): a declared shape beyond this is hostile or a mistake

Verdict = Literal["passed", "failed", "uncertified"]

Name = Annotated[str, Meta(min_length=1, max_length=256)]
Text = Annotated[str, Meta(max_length=4096)]
Sha256 = Annotated[str, Meta(pattern="^[0-9a-f]{64}$")]
Count = Annotated[int, Meta(ge=0, le=1 << 40)]
StaticDim = Annotated[int, Meta(ge=1, le=1 << 20)]
Dim = StaticDim | Name  # a name is a symbolic (dynamic) dimension, e.g. "batch"
Seconds = Annotated[float, Meta(ge=0)]
Probability = Annotated[float, Meta(ge=0, le=1)]


class Record(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Base of every manifest record: immutable, keyword-only, unknown fields refused."""


FileName = Annotated[str, Meta(min_length=1, max_length=255)]  # NAME_MAX: a longer name cannot exist on disk


class FileRecord(Record, kw_only=True):
    """A file the manifest vouches for, by size and SHA-256."""

    file: FileName
    sha256: Sha256
    bytes: Count


class ModelCard(Record, kw_only=True):
    name: Name
    task: TaskName
    labels: Annotated[list[Name], Meta(min_length=1, max_length=4096)]
    input_kind: InputKindName = DEFAULT_INPUT_KIND  # type: ignore[valid-type]  # edgemed.input_kinds
    # Set only for bundles made from edgemed's own shipped models: bench may then grade them on the
    # shipped labelled samples (never a user's model: that would grade it on someone else's data).
    shipped: Name | None = None

    def __post_init__(self) -> None:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels: class names must be distinct")


LAYOUT_RANK = {"NCHW": 4, "NHWC": 4, "NCL": 3}


class ValueRange(Record, kw_only=True):
    """The frames convert was given (``--calib``, before preprocessing): their dtype(s) and the lowest and highest
    value among them. A spec that scales by a fixed factor (``/255``) is only right for frames in this range: the
    runtime refuses frames far outside it (:mod:`edgemed.input_range`)."""

    dtypes: Annotated[list[Annotated[str, Meta(pattern="^(u?int(8|16|32|64)|float(16|32|64)|bool)$")]],
                      Meta(min_length=1, max_length=8)]
    low: float
    high: float
    frames: Count

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            raise ValueError(f"value_range: low {self.low} and high {self.high} are not an interval")


class InputSpec(Record, kw_only=True):
    name: Name
    shape: Annotated[list[Dim], Meta(min_length=3, max_length=4)]
    dtype: Literal["float32"]
    layout: Literal["NCHW", "NHWC", "NCL"]
    value_range: ValueRange | None = None  # image models converted since issue 20; absent: not checked

    def same_tensor(self, other: "InputSpec") -> bool:
        """Whether two models take the same tensor (shape, dtype, layout): their answers on the same frames can
        be compared. The value range is what each one's calibration frames held, not part of the tensor."""
        return (self.shape, self.dtype, self.layout) == (other.shape, other.dtype, other.layout)

    def __post_init__(self) -> None:
        if len(self.shape) != LAYOUT_RANK[self.layout]:
            raise ValueError(f"shape: {self.shape} does not have the {LAYOUT_RANK[self.layout]} dimensions of "
                             f"layout {self.layout}")
        if any(isinstance(d, str) for d in self.shape[1:]):
            raise ValueError(f"shape: only the batch dimension may be symbolic, got {self.shape}")
        if math.prod(self.static_shape) > MAX_INPUT_ELEMENTS:
            raise ValueError(f"shape: {self.shape} is implausibly large")

    @property
    def static_shape(self) -> tuple[int, ...]:
        """The shape with a symbolic batch read as 1."""
        return tuple(d if isinstance(d, int) else 1 for d in self.shape)

    @property
    def dynamic_batch(self) -> bool:
        return isinstance(self.shape[0], str)


class FeatureInput(Record, kw_only=True):
    """A model input beside the main one: a vector of named numbers per case (a beat's RR intervals, a patient's
    age beside an image), fed as a (batch, K) float32 tensor in ``features`` order. No preprocessing: the numbers
    go in as stated, in ``units``; a model that wants them scaled scales them in its graph, so no device can apply
    another scaling than training did. Features named like :data:`edgemed.rr_intervals.RR_FEATURES` are derived
    by the beat stream itself from the R peaks it finds."""

    name: Name
    features: Annotated[list[Name], Meta(min_length=1, max_length=1024)]
    dtype: Literal["float32"] = "float32"
    units: Name | None = None

    def __post_init__(self) -> None:
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"features: {self.name!r} names a feature twice")


class OutputSpec(Record, kw_only=True):
    names: Annotated[list[Name], Meta(min_length=1, max_length=64)]
    kind: Literal["logits", "probabilities", "detections"]
    shape: Annotated[list[Dim], Meta(min_length=1, max_length=8)]  # the first output's

    def __post_init__(self) -> None:
        if len(set(self.names)) != len(self.names):
            raise ValueError("names: output names must be distinct")


DETECTION_ROLES = {
    # layout -> the outputs it has, by role (edgemed.detection_post decodes each)
    "edgemed": ("boxes", "scores"),  # (N, K, 4) xyxy, (N, K, C): before NMS
    "yolo": ("raw",),  # (N, 4 + C, K): cx, cy, w, h and class scores, before NMS (Ultralytics' export)
    "torchvision": ("boxes", "labels", "scores"),  # (K, 4), (K,), (K,): after NMS, labels 1-based
    "nms": ("boxes", "scores", "classes"),  # (K, 4), (K,), (K,): after the NMS edgemed adds to the graph
}


class DetectionPost(Record, kw_only=True):
    """How a detector's outputs become boxes: the layout, where NMS runs, and its thresholds."""

    layout: Literal["edgemed", "yolo", "torchvision"]
    nms: Literal["graph", "host"]
    score_threshold: Probability
    iou_threshold: Probability
    max_detections: Annotated[int, Meta(ge=1, le=10000)]
    outputs: dict[Literal["boxes", "scores", "raw", "labels", "classes"], Name]  # role -> output name
    label_offset: Annotated[int, Meta(ge=0, le=1)] = 0  # torchvision counts background as label 0

    def __post_init__(self) -> None:
        form = "nms" if self.nms == "graph" or self.layout == "torchvision" else self.layout
        if self.layout == "torchvision" and self.nms != "graph":
            raise ValueError("nms: torchvision-layout models run NMS in their own graph")
        if set(self.outputs) != set(DETECTION_ROLES["torchvision" if self.layout == "torchvision" else form]):
            raise ValueError(f"outputs: {sorted(self.outputs)} are not the roles of a {form} detector")

    @property
    def form(self) -> str:
        """Which outputs the model has: raw candidates of a layout, or detections after NMS."""
        if self.layout == "torchvision":
            return "torchvision"
        return "nms" if self.nms == "graph" else self.layout


class Postprocess(Record, kw_only=True):
    activation: Literal["softmax", "sigmoid", "none"]
    decision: Literal["argmax", "nms"]
    resize_to_input: Text | None = None
    detection: DetectionPost | None = None


class Estimate(Record, kw_only=True):
    """One drift figure, the number of cases it rests on, and (where known) its confidence bounds."""

    value: float
    cases: Count
    low: float | None = None
    high: float | None = None
    confidence: Probability | None = None
    method: Text | None = None

    def __post_init__(self) -> None:
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"low: {self.low} is above high {self.high}")


class DriftRecord(Record, kw_only=True):
    """The gate's judgement of one artifact against the FP32 reference."""

    verdict: Verdict
    budget: Text  # "parity" for the FP32 export, else the budget text, e.g. "agreement>=0.999"
    cases: Count
    evaluated_on: Text = ""
    metrics: dict[Name, Estimate] = {}
    figures: dict[Name, float] = {}  # descriptive breakdowns (per class), never judged on
    missed: list[Text] = []
    needed_cases: Count | None = None
    reference: Text | None = None  # what produced the FP32 reference (parity only)
    tolerance: Annotated[float, Meta(ge=0)] | None = None  # parity: the max |diff| allowed
    # Where the verdict was measured, and the arithmetic the engine really computed in there (an FP32 artifact
    # runs at f16 on an NPU): a verdict is about that execution, not about the file alone.
    device: Name | None = None
    computed_in: Name | None = None

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"

    def value(self, metric: str) -> float | None:
        estimate = self.metrics.get(metric)
        return None if estimate is None else estimate.value


class PairedTest(Record, kw_only=True):
    """One clinical figure (e.g. accuracy, sensitivity of a class) for FP32 and the candidate on the same
    labelled cases, and how much the candidate drops it: paired, with exact bounds and tests."""

    cases: Count
    fp32: float
    candidate: float
    drop: float  # fp32 - candidate
    drop_low: float
    drop_high: float
    verdict: Verdict
    p_mcnemar: Probability | None = None  # two-sided exact McNemar test of equality (classification)
    p_noninferiority: Probability | None = None  # one-sided test of "drop >= margin"
    method: Text = ""


class ClinicalRecord(Record, kw_only=True):
    """The candidate against ground truth, beside FP32 on the same cases (``--val``/``--val-labels``)."""

    verdict: Verdict
    margin: Annotated[float, Meta(ge=0, le=1)]  # non-inferiority margin on each figure
    cases: Count
    evaluated_on: Text = ""
    tests: dict[Name, PairedTest] = {}
    missed: list[Text] = []


VERDICT_ORDER = {"passed": 0, "uncertified": 1, "failed": 2}


class QuantizedLayers(Record, kw_only=True):
    """How many compute layers really take INT8 weights (an all-float "INT8" shows 0)."""

    int8: Count
    of: Count
    fake_quantize_ops: Count | None = None

    def __post_init__(self) -> None:
        if self.int8 > self.of:
            raise ValueError(f"int8: {self.int8} quantized layers of {self.of}")


class TensorRtOptions(Record, kw_only=True):
    """What a TensorRT engine is built with. Recorded at conversion, used unchanged by the on-target
    rebuild, so the device runs exactly the engine configuration the gate measured."""

    precision: Precision
    min_shape: Annotated[list[StaticDim], Meta(min_length=3, max_length=4)]
    opt_shape: Annotated[list[StaticDim], Meta(min_length=3, max_length=4)]
    max_shape: Annotated[list[StaticDim], Meta(min_length=3, max_length=4)]
    dla_core: Annotated[int, Meta(ge=0, le=7)] | None = None
    gpu_fallback: bool = True
    workspace_bytes: Annotated[int, Meta(ge=1 << 20, le=1 << 40)] = 1 << 30
    extra_flags: list[Name] = []

    def __post_init__(self) -> None:
        lo, opt, hi = self.min_shape, self.opt_shape, self.max_shape
        if not len(lo) == len(opt) == len(hi):
            raise ValueError("min_shape/opt_shape/max_shape: ranks differ")
        if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
            raise ValueError(f"opt_shape: need min <= opt <= max per dimension, got {lo}, {opt}, {hi}")
        if lo[1:] != hi[1:]:
            raise ValueError("max_shape: only the batch dimension may vary")


class BuildRecord(Record, kw_only=True):
    """How an artifact was made. Typed fields are read by code; ``settings`` and ``attempts`` are the
    descriptive record shown in reports."""

    seconds: Seconds = 0.0
    tool: Text = ""
    settings: dict[Name, str | int | float | bool | list[str] | None] = {}
    excluded_nodes: list[Text] = []
    quantized_layers: QuantizedLayers | None = None
    layer_sqnr_db: list[tuple[Text, float]] = []
    attempts: list[dict[Name, Any]] = []
    static_batch: StaticDim | None = None
    tensorrt: TensorRtOptions | None = None


class Artifact(Record, kw_only=True):
    file: FileName
    sha256: Sha256
    bytes: Count
    backend: Backend
    precision: Precision
    drift: DriftRecord
    build: BuildRecord = BuildRecord()
    built_with: dict[Name, Text] = {}
    weights: FileRecord | None = None  # OpenVINO IR: the .bin beside the .xml
    clinical: ClinicalRecord | None = None

    def __post_init__(self) -> None:
        if (self.backend == "tensorrt") != (self.build.tensorrt is not None):
            raise ValueError("build.tensorrt: TensorRT artifacts, and only they, record their TensorRT options")
        if self.build.tensorrt is not None and self.build.tensorrt.precision != self.precision:
            raise ValueError(f"build.tensorrt.precision: {self.build.tensorrt.precision} for a "
                             f"{self.precision} artifact")

    @property
    def key(self) -> str:
        return f"{self.backend}/{self.precision}"

    @property
    def verdict(self) -> str:
        """The artifact's verdict: the worse of its drift and (with labelled data) clinical verdicts."""
        verdicts = [self.drift.verdict] + ([self.clinical.verdict] if self.clinical else [])
        return max(verdicts, key=VERDICT_ORDER.__getitem__)

    @property
    def record(self) -> FileRecord:
        return FileRecord(file=self.file, sha256=self.sha256, bytes=self.bytes)

    def files(self) -> list[FileRecord]:
        return [self.record] + ([self.weights] if self.weights else [])

    @property
    def size_bytes(self) -> int:
        """Size on disk, an OpenVINO weights file included."""
        return sum(f.bytes for f in self.files())


class Explanation(Record, kw_only=True):
    """How the bundle explains its answers (``convert --explain``): the method, the layer whose output the map is
    made from, the extra graph output that carries it, and the file holding the head's weights. Every artifact
    of the bundle has that output (they are all built from the one exported ONNX); ``load`` checks it."""

    method: Literal["cam", "recipro-cam"]
    target_layer: Name  # cam: the module whose output enters the global pooling; recipro-cam: the masked layer
    features_output: Name  # graph output: cam (N, K, h, w); recipro-cam (N, h*w, C)
    head: FileRecord | None = None  # cam: .npz weight (C, K), bias (C,) of the Linear head
    grid: Annotated[list[StaticDim], Meta(min_length=2, max_length=2)] | None = None  # recipro-cam: (h, w)

    def __post_init__(self) -> None:
        if (self.method == "cam") != (self.head is not None):
            raise ValueError(f"head: method {self.method} {'needs' if self.method == 'cam' else 'has no'} the head's "
                             "weights file")
        if (self.method == "recipro-cam") != (self.grid is not None):
            raise ValueError(f"grid: method {self.method} {'needs' if self.method == 'recipro-cam' else 'has no'} "
                             "the feature map's grid")


class Provenance(Record, kw_only=True):
    source_sha256: Sha256
    source_kind: Name
    calibration_sha256: Sha256 | None = None
    calibration_count: Count = 0
    evaluation_sha256: Sha256 | None = None  # the verdict images
    evaluation_count: Count = 0
    evaluation_source: Text | None = None  # where they were read from (bench finds them there by hash)
    tuning_count: Count = 0
    tools: dict[Name, Text] = {}
    created: Text = ""
    host: Text = ""


class Manifest(Record, kw_only=True):
    schema_version: Annotated[int, Meta(ge=SCHEMA_VERSION, le=SCHEMA_VERSION)]
    model: ModelCard
    input: InputSpec
    output: OutputSpec
    preprocess: Annotated[list[dict[Name, Any]], Meta(max_length=64)]
    postprocess: Postprocess
    artifacts: Annotated[list[Artifact], Meta(min_length=1, max_length=64)]
    files: Annotated[list[FileRecord], Meta(max_length=64)] = []
    provenance: Provenance
    explain: Explanation | None = None  # absent: the bundle makes no saliency maps (every bundle before issue 22)
    # inputs beside ``input`` (issue 21), in the graph's input order after it; absent: a one-input model
    features: Annotated[list[FeatureInput], Meta(max_length=16)] = []

    def __post_init__(self) -> None:
        from .errors import InputError

        kind = input_kind(self.model.input_kind)
        if self.input.layout not in kind.layouts:
            raise ValueError(f"input.layout: {self.input.layout} does not fit model.input_kind {self.model.input_kind} "
                             "(signals are NCL, images NCHW or NHWC)")
        try:
            kind.validate_spec(self.preprocess)
        except InputError as exc:  # the spec validator's message names the op and its parameter
            raise ValueError(f"preprocess: {exc}") from exc
        names = [f.file for a in self.artifacts for f in a.files()] + [f.file for f in self.files] + \
            ([self.explain.head.file] if self.explain and self.explain.head else [])
        if len(set(names)) != len(names):
            raise ValueError(f"artifacts: a file is listed twice ({sorted(n for n in names if names.count(n) > 1)[0]})")
        keys = [a.key for a in self.artifacts]
        if len(set(keys)) != len(keys):
            raise ValueError("artifacts: two artifacts with the same backend and precision")
        for i, art in enumerate(self.artifacts):
            trt = art.build.tensorrt
            if trt is not None and list(trt.max_shape[1:]) != list(self.input.static_shape[1:]):
                raise ValueError(f"artifacts[{i}].build.tensorrt.max_shape: {trt.max_shape} does not fit the input "
                                 f"shape {self.input.shape}")
        self._check_labels()
        inputs = [self.input.name] + [f.name for f in self.features]
        if len(set(inputs)) != len(inputs):
            raise ValueError(f"features: input names {inputs} are not distinct")
        if self.features and self.explain is not None:
            raise ValueError("explain: saliency maps of a model with inputs beside the image are not made")
        if self.explain is not None:
            if not TASK_FACTS[self.model.task].explainable or not kind.frames:
                raise ValueError(f"explain: method {self.explain.method} explains image classifiers, not "
                                 f"{self.model.input_kind} {self.model.task}")
            if self.explain.features_output in self.output.names:
                raise ValueError(f"explain.features_output: {self.explain.features_output!r} is also one of "
                                 "output.names")

    def _check_labels(self) -> None:
        """Class names must match what the model outputs (a 1-channel sigmoid output has two classes)."""
        shape = self.output.shape
        if not TASK_FACTS[self.model.task].channels_are_classes or len(shape) < 2 or not isinstance(shape[1], int):
            return
        classes = max(2, self.output.shape[1])
        if len(self.model.labels) != classes:
            raise ValueError(f"model.labels: {len(self.model.labels)} names for the {classes} classes the model "
                             "outputs")

    # -- reading and writing ----------------------------------------------------------------
    @classmethod
    def from_json(cls, data: bytes | str, where: str = "edgemed.json") -> "Manifest":
        """Parse and validate; every problem is a BundleError naming the field."""
        fix = "rebuild the bundle with edgemed convert"
        try:
            raw = json.loads(data, parse_constant=_refuse_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleError(f"{where} is not valid JSON ({exc})", fix) from exc
        except RecursionError as exc:  # "[[[[..." 1,000 deep: json's recursive decoder gives up, in its own type
            raise BundleError(f"{where} nests arrays or objects too deeply to be a manifest", fix) from exc
        if not isinstance(raw, dict):
            raise BundleError(f"{where} is not a JSON object", fix)
        version = raw.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise BundleError(f"{where}: field schema_version is missing or not an integer", fix)
        if version > SCHEMA_VERSION:
            raise BundleError(f"{where}: schema_version {version} is newer than this edgemed reads "
                              f"({SCHEMA_VERSION})", "upgrade edgemed on this device")
        if version < 1:
            raise BundleError(f"{where}: field schema_version {version} is not a schema edgemed ever wrote", fix)
        migrated = ""
        if version == 1:
            from .manifest_v1 import migrate

            raw, migrated = migrate(raw), " (read as schema_version 1, migrated)"
        if raw.get("schema_version") == 2:  # version 3 only adds optional fields
            raw, migrated = {**raw, "schema_version": SCHEMA_VERSION}, migrated or " (read as schema_version 2)"
        try:
            return msgspec.convert(raw, cls)
        except msgspec.ValidationError as exc:
            raise BundleError(f"{where}: {_field_message(exc, raw, cls)}{migrated}", fix) from exc

    def to_json(self) -> bytes:
        """The manifest as indented JSON; the written text is read back and checked before it is returned."""
        text = json.dumps(msgspec.to_builtins(self), indent=2, allow_nan=False) + "\n"
        Manifest.from_json(text, "the manifest being written")  # a writer bug must never reach a device
        return text.encode("utf-8")

    # -- accessors ----------------------------------------------------------------------------
    def listed_files(self) -> list[tuple[str, FileRecord]]:
        """(field path, record) of every file the manifest vouches for."""
        out = []
        for i, art in enumerate(self.artifacts):
            out.append((f"artifacts[{i}]", art.record))
            if art.weights is not None:
                out.append((f"artifacts[{i}].weights", art.weights))
        out += [(f"files[{i}]", f) for i, f in enumerate(self.files)]
        if self.explain is not None and self.explain.head is not None:
            out.append(("explain.head", self.explain.head))
        return out

    def artifact(self, backend: str, precision: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.backend == backend and a.precision == precision), None)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _field_message(exc: msgspec.ValidationError, raw: Any, cls: type) -> str:
    """msgspec says 'Expected `int`, got `str` - at `$.artifacts[0].bytes`'; edgemed says
    'field artifacts[0].bytes: expected `int`, got `str`', with dict keys named where msgspec writes [...]."""
    text = str(exc)
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        return f"invalid manifest: {text}"
    path = where.rstrip("`").removeprefix("$").lstrip(".")
    if "[...]" in path:
        path = _name_keys(raw, cls, path)
    field = re.match(r"^([a-z_]+): ", message)  # a record's own check names its field: "head: ..." -> explain.head
    if field and path:
        path, message = f"{path}.{field.group(1)}", message[field.end():]
    return f"field {path or '(top level)'}: {message[:1].lower()}{message[1:]}"


_TOKEN = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]")


def _walk(raw: Any, path: str) -> Any:
    node = raw
    for name, index in _TOKEN.findall(path):
        node = node[int(index)] if index else node[name]
    return node


def _name_keys(raw: Any, cls: type, path: str) -> str:
    """Find which key of a dict field holds the refused value (msgspec reports dict keys as [...])."""
    prefix, _, rest = path.partition("[...]")
    try:
        node = _walk(raw, prefix)
    except (KeyError, IndexError, TypeError):
        return path
    if not isinstance(node, dict):
        return path
    for key in node:
        trial = copy.deepcopy(raw)
        _walk(trial, prefix).clear()
        _walk(trial, prefix)[key] = node[key]
        try:
            msgspec.convert(trial, cls)
        except msgspec.ValidationError as exc:
            if f"{prefix}[...]" in str(exc):
                return f"{prefix}[{json.dumps(key)}]{rest}"
    return path


def json_schema() -> dict:
    """The JSON Schema of the current manifest version (shipped as ``manifest.schema.json``)."""
    schema = msgspec.json.schema(Manifest)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://edgemed.dev/schemas/manifest-{SCHEMA_VERSION}.json",
            "title": f"edgemed bundle manifest, schema version {SCHEMA_VERSION}", **schema}
