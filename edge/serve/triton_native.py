"""``edgemed export triton --backend onnxruntime|openvino``: a bundle as a Triton ensemble a stock image runs.

The Python-backend export (:mod:`edgemed.serve.triton_repository`) needs edgemed inside Triton's Python; the
stock Triton image that KServe pulls has numpy and nothing else. This export writes four models:

- ``NAME_engine``: the certified artifact itself on Triton's native ONNX Runtime (``model.onnx``) or
  OpenVINO (``model.xml`` + ``model.bin``) backend, batched where the artifact takes a batch;
- ``NAME_pre``, ``NAME_post``: Python-backend steps whose only import is numpy, running
  :mod:`edgemed.serve.triton_steps` (copied beside their ``model.py``) with the bundle's spec, labels and
  output reading in ``steps.json``;
- ``NAME``: the ensemble a client calls, raw frames in (``IMAGE``, (B,) H, W, C of the dtype the
  bundle was calibrated on), ``predict``'s outputs out, under the same names as the Python-backend
  export (``PROBABILITIES``/``LABEL``, ``MASK``, ``BOXES``/``SCORES``/``CLASSES``).

The bundle hash, artifact and verdict travel in every config's parameters, and the artifact is chosen
exactly as ``load`` would choose it (never a failed or uncertified one unless ``accept`` names it).
The configs follow Triton's model-configuration schema (checked against tritonclient's own protobuf in
the tests); the native backends are not in the Triton server this project can run, so the engine step
is verified only as far as its configuration and the steps around it are.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..backends import BACKENDS
from ..bundle import Bundle
from ..errors import InputError
from ..input_kinds import input_kind
from ..tasks import ServedTensor, task_named

TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int64": "TYPE_INT64",
                "int32": "TYPE_INT32", "int16": "TYPE_INT16", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8",
                "uint16": "TYPE_UINT16", "bool": "TYPE_BOOL"}
FRAME_TYPES = {"uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "float32": "TYPE_FP32"}
STEPS_FILE = "edgemed_steps.py"

PRE_MODEL_PY = '''"""edgemed export triton: a frame into the model's input (Python-backend step, numpy only)."""
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb

sys.path.insert(0, str(Path(__file__).parent))
import edgemed_steps as steps  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.config = steps.load_config((Path(__file__).parent / "steps.json").read_text())

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                out = steps.pre_step(pb.get_input_tensor_by_name(request, "IMAGE").as_numpy(), self.config)
                responses.append(pb.InferenceResponse([pb.Tensor(k, np.ascontiguousarray(v)) for k, v in out.items()]))
            except steps.StepError as exc:
                responses.append(pb.InferenceResponse([], error=pb.TritonError(str(exc))))
        return responses
'''

POST_MODEL_PY = '''"""edgemed export triton: the engine's outputs into predict's (Python-backend step, numpy only)."""
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb

sys.path.insert(0, str(Path(__file__).parent))
import edgemed_steps as steps  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.config = steps.load_config((Path(__file__).parent / "steps.json").read_text())
        self.names = ["GEOMETRY"] + [f"RAW_{i}" for i in range(len(self.config["outputs"]))]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                inputs = {n: pb.get_input_tensor_by_name(request, n).as_numpy() for n in self.names}
                out = steps.post_step(inputs, self.config)
                responses.append(pb.InferenceResponse([pb.Tensor(k, v) for k, v in out.items()]))
            except steps.StepError as exc:
                responses.append(pb.InferenceResponse([], error=pb.TritonError(str(exc))))
        return responses
'''


def _dims(shape: tuple, batched: bool) -> tuple[int, ...]:
    dims = tuple(d if isinstance(d, int) and d > 0 else -1 for d in shape)
    return dims[1:] if batched else dims


def engine_io(bundle_dir: Path, artifact) -> tuple[list, list]:
    """The artifact's inputs and outputs as its own runtime reads them (one source: the engine)."""
    from edgemed.runtimes import create_engine

    engine = create_engine(artifact.backend, bundle_dir / artifact.file, threads=1, precision=artifact.precision)
    try:
        return list(engine.inputs), list(engine.outputs)
    finally:
        engine.close()


def step_config(bundle: Bundle, outputs: list[str], batched: bool) -> dict:
    """What the numpy steps need from the manifest; refuses what they cannot compute exactly."""
    from PIL import __version__ as pillow_version

    from ..input_range import range_matters
    from .triton_steps import PORTABLE_OPS

    m = bundle.manifest
    unsupported = sorted({p["op"] for p in m.preprocess} - set(PORTABLE_OPS))
    if unsupported:
        raise InputError(f"preprocess op(s) {', '.join(unsupported)} cannot run in a numpy-only Triton step",
                         "export with --backend python (the edgemed pipeline in Triton's Python backend)")
    layout = m.input.layout
    shape = m.input.static_shape
    channels, size = (shape[1], shape[2:4]) if layout == "NCHW" else (shape[3], shape[1:3])
    vr = m.input.value_range
    det = m.postprocess.detection
    return {
        "spec": [dict(p) for p in m.preprocess], "layout": layout, "channels": int(channels),
        "size": [int(s) for s in size], "batched": batched, "pillow_major": int(pillow_version.split(".")[0]),
        "value_range": ({"low": vr.low, "high": vr.high, "frames": vr.frames}
                        if vr is not None and range_matters(m.preprocess) else None),
        # the tensors the post step answers with (the task's, as the Python backend's): which it computes follows
        "answers": [t.name for t in task_named(m.model.task).served_outputs(m.model.labels)],
        "output_kind": m.output.kind, "labels": list(m.model.labels), "outputs": outputs,
        "box_decoding": None if det is None else {
            "form": det.form, "outputs": dict(det.outputs), "score_threshold": det.score_threshold,
            "iou_threshold": det.iou_threshold, "max_detections": det.max_detections,
            "label_offset": det.label_offset},
    }


def _model(name: str, head: str, max_batch: int, inputs: list[ServedTensor], outputs: list[ServedTensor],
           extra: list[str], params: dict) -> str:
    lines = [f'name: "{name}"', head, f"max_batch_size: {max_batch}", "input ["]
    lines += [",\n".join(t.pbtxt() for t in inputs), "]", "output [", ",\n".join(t.pbtxt() for t in outputs), "]"]
    lines += extra
    for k, v in params.items():
        lines += ["parameters {", f'  key: "{k}"', f'  value: {{ string_value: "{v}" }}', "}"]
    return "\n".join(lines) + "\n"


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    maps = [f'      input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items()]
    maps += [f'      output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items()]
    return "\n".join([f'    {{\n      model_name: "{model}"\n      model_version: -1', *maps, "    }"])


def write_native(tmp: Path, bundle_dir: Path, bundle: Bundle, name: str, artifact, backend: str, max_batch: int,
                 queue_delay_us: int, instances: int, params: dict) -> list[str]:
    """The four models of one bundle under ``tmp``; returns their names (the ensemble first)."""
    from . import triton_steps

    if artifact.backend != backend:
        raise InputError(f"{bundle_dir}: the artifact that would serve is {artifact.key}, not a {backend} one",
                         f"pass --backend {artifact.backend}, or convert the bundle with a {backend} artifact")
    if not input_kind(bundle.manifest.model.input_kind).frames:
        raise InputError(f"{bundle_dir}: a {bundle.manifest.model.input_kind} model; the Triton export takes images",
                         "run signal bundles in process (pipe.beats / pipe.beat_reader)")
    task = task_named(bundle.task)
    inputs, outputs = engine_io(bundle_dir, artifact)
    if len(inputs) != 1:
        raise InputError(f"{bundle_dir}: the model has {len(inputs)} inputs", "export with --backend python")
    batched = (max_batch > 0 and not task.ragged_outputs and bundle.manifest.input.dynamic_batch
               and all(not isinstance(o.shape[0], int) or o.shape[0] <= 0 for o in outputs if o.shape))
    mb = max_batch if batched else 0
    config = step_config(bundle, [o.name for o in outputs], batched)
    vr = bundle.manifest.input.value_range
    frame_dtype = next((d for d in (vr.dtypes if vr else []) if d in FRAME_TYPES), "uint8")
    frame = ServedTensor("IMAGE", FRAME_TYPES[frame_dtype], (-1, -1, -1) if batched else (1, -1, -1, -1))
    tensor = ServedTensor("TENSOR", "TYPE_FP32", _dims(inputs[0].shape, batched) if batched
                    else (1, *bundle.manifest.input.static_shape[1:]))
    geometry = ServedTensor("GEOMETRY", "TYPE_FP64", (triton_steps.GEOMETRY_ROWS + 1, 9) if batched
                      else (1, triton_steps.GEOMETRY_ROWS + 1, 9))
    raw = [ServedTensor(o.name, TRITON_TYPES.get(o.dtype, "TYPE_FP32"), _dims(o.shape, batched)) for o in outputs]
    raw_in = [ServedTensor(f"RAW_{i}", t.dtype, t.dims) for i, t in enumerate(raw)]
    final = [t if batched else t.batched() for t in task.served_outputs(bundle.labels)]
    group = ["instance_group [", f"  {{ kind: KIND_CPU count: {instances} }}", "]"]
    names = [name, f"{name}_pre", f"{name}_engine", f"{name}_post"]

    engine_dir = tmp / names[2] / "1"
    engine_dir.mkdir(parents=True)
    native = BACKENDS[backend].triton
    file, head = native.file, native.config_line
    shutil.copyfile(bundle_dir / artifact.file, engine_dir / file)
    if backend == "openvino":
        shutil.copyfile(bundle_dir / artifact.weights.file, engine_dir / "model.bin")
    batching = ["dynamic_batching {", f"  max_queue_delay_microseconds: {queue_delay_us}", "}"] if batched else []
    (tmp / names[2] / "config.pbtxt").write_text(_model(
        names[2], head, mb, [ServedTensor(inputs[0].name, "TYPE_FP32", tensor.dims)], raw, batching + group, params))

    for step, model_py, ins, outs in ((names[1], PRE_MODEL_PY, [frame], [tensor, geometry]),
                                      (names[3], POST_MODEL_PY, [geometry, *raw_in], final)):
        (tmp / step / "1").mkdir(parents=True)
        (tmp / step / "1" / "model.py").write_text(model_py)
        shutil.copyfile(Path(triton_steps.__file__), tmp / step / "1" / STEPS_FILE)
        (tmp / step / "1" / "steps.json").write_text(json.dumps(config, indent=1))
        (tmp / step / "config.pbtxt").write_text(_model(step, 'backend: "python"', mb, ins, outs, group, params))

    steps = [
        _step(names[1], {"IMAGE": "IMAGE"}, {"TENSOR": "tensor", "GEOMETRY": "geometry"}),
        _step(names[2], {inputs[0].name: "tensor"}, {o.name: f"raw_{i}" for i, o in enumerate(outputs)}),
        _step(names[3], {"GEOMETRY": "geometry", **{f"RAW_{i}": f"raw_{i}" for i in range(len(outputs))}},
              {t.name: t.name for t in final}),
    ]
    schedule = ["ensemble_scheduling {", "  step [", ",\n".join(steps), "  ]", "}"]
    (tmp / name).mkdir()
    (tmp / name / "1").mkdir()  # Triton wants a version folder, even an empty one, for an ensemble
    (tmp / name / "config.pbtxt").write_text(_model(name, 'platform: "ensemble"', mb, [frame], final, schedule,
                                                    params))
    return names
