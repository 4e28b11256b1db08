"""The edgemed pipeline as a Triton Python-backend model (``model.py`` of an exported repository imports it).

Triton hands ``execute`` every request its dynamic batcher grouped; each request's frames are
preprocessed one by one (they may all differ in size and dtype), the tensors of the whole group
go through the engine in one call where the artifact takes a batch, and each request gets what
``predict`` returns, as named outputs. A request that cannot be served (wrong rank or dtype, NaN,
an oversized frame) gets a Triton error naming the problem and the fix; the others in its group
are served. Runs inside Triton's Python stub: no torch, no onnx, as on a device.

Inputs (exactly one of them per request, batch axis first, frames of one request the same size; a request with
two is refused, never answered for one of them):
``IMAGE_UINT8``, ``IMAGE_UINT16``, ``IMAGE_FP32``: (B, H, W, C) frames as ``predict`` takes them
(C = 1 for grey); ``TENSOR``: (B, *model input without batch) already preprocessed float32 (not for an
ensemble, whose members each preprocess the frame their own way).
Outputs by task: ``PROBABILITIES`` (B, C) and ``LABEL`` (B, 1) bytes; ``MASK`` (B, H, W) uint8;
``BOXES`` (B, K, 4), ``SCORES`` (B, K), ``CLASSES`` (B, K) int32 (detectors: B = 1).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

IMAGE_INPUTS = ("IMAGE_UINT8", "IMAGE_UINT16", "IMAGE_FP32")  # Triton checks each one's dtype (config.pbtxt)
TENSOR_INPUT = "TENSOR"


def _bad_request(pb, message: str):
    """A client error (HTTP 400 / gRPC INVALID_ARGUMENT) where this Python backend can say so."""
    code = getattr(pb.TritonError, "INVALID_ARG", None)
    return pb.TritonError(message, code) if code is not None else pb.TritonError(message)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        import edgemed
        from edgemed.tasks import task_named

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        bundle = Path(args["model_repository"]) / args["model_version"] / "bundle"
        self.pipe = edgemed.load(bundle, device=params.get("device") or "cpu", backend=params.get("backend") or None,
                                 precision=params.get("precision") or None, accept=params.get("accept") or None,
                                 callers=int(params.get("callers") or 1))
        self.task = task_named(self.pipe.task)  # its served tensors (edgemed.tasks)
        self.ensemble = hasattr(self.pipe, "members")  # an EnsemblePipeline: its members run frame by frame
        self.batched = not self.ensemble and self.pipe.dynamic_batch

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb

        from edgemed.errors import EdgemedError

        prepared: list[list] = []
        errors: list[str | None] = []
        for request in requests:
            try:
                prepared.append(self._prepare(request, pb))
                errors.append(None)
            except EdgemedError as exc:
                prepared.append([])
                errors.append(str(exc))
        flat = [p for group in prepared for p in group]
        outputs = self._infer(flat) if flat else []
        responses, at = [], 0
        for group, error in zip(prepared, errors):
            if error is not None:
                responses.append(pb.InferenceResponse(output_tensors=[], error=_bad_request(pb, error)))
                continue
            mine, at = outputs[at:at + len(group)], at + len(group)
            try:  # finish refuses outputs holding NaN/Inf: that request's error, not its group's
                results = [self._finish(out, p) for out, p in zip(mine, group)]
                responses.append(pb.InferenceResponse(output_tensors=self._tensors(results, pb)))
            except EdgemedError as exc:
                responses.append(pb.InferenceResponse(output_tensors=[], error=_bad_request(pb, str(exc))))
        return responses

    def _prepare(self, request, pb) -> list:
        from edgemed.errors import InputError
        from edgemed.preprocess import Prepared

        given = [n for n in (*IMAGE_INPUTS, TENSOR_INPUT) if pb.get_input_tensor_by_name(request, n) is not None]
        if len(given) > 1:  # answering one of them would silently drop the other
            raise InputError(f"the request carries {len(given)} inputs ({', '.join(given)}); each request is one "
                             "frame or one batch", f"send exactly one of {', '.join([*IMAGE_INPUTS, TENSOR_INPUT])}")
        tensor = pb.get_input_tensor_by_name(request, TENSOR_INPUT)
        if tensor is not None and self.ensemble:  # the config declares no TENSOR for an ensemble; never guess one
            raise InputError("an ensemble takes frames: each member preprocesses them its own way",
                             f"send raw frames as one of {', '.join(IMAGE_INPUTS)}")
        if tensor is not None:
            x = tensor.as_numpy()
            want = tuple(self.pipe.bundle.manifest.input.static_shape[1:])
            if x.dtype != np.float32 or x.shape[1:] != want or not np.isfinite(x).all():
                raise InputError(f"TENSOR must be finite float32 (B, {', '.join(map(str, want))}), got {x.dtype} "
                                 f"{x.shape}", "send preprocessed tensors, or raw frames as IMAGE_*")
            return [Prepared(t[None], tuple(want[-2:]), []) for t in x]
        for name in IMAGE_INPUTS:
            image = pb.get_input_tensor_by_name(request, name)
            if image is not None:
                frames = image.as_numpy()
                if frames.ndim != 4:
                    raise InputError(f"{name} has shape {frames.shape}, not (B, H, W, C)",
                                     "send frames with a batch axis first and a channel axis last (1 for grey)")
                if self.task.ragged_outputs and len(frames) != 1:
                    raise InputError(f"a detector answers one frame per request, got {len(frames)}",
                                     "send one frame per request (Triton batches requests)")
                return [self.pipe.prepare(f) for f in frames]
        raise InputError("the request has no input", f"send one of {', '.join([*IMAGE_INPUTS, TENSOR_INPUT])}")

    def _infer(self, prepared: list) -> list:
        """Each prepared frame's engine output: one batched call where the artifact takes a batch. An ensemble's
        members and views run frame by frame in :meth:`_finish`, where an error is that request's alone."""
        if self.ensemble:
            return prepared
        name = self.pipe.input_name
        tensors = [p.tensor for p in prepared]
        if self.batched and len(tensors) > 1:
            out = self.pipe.engine.infer({name: np.concatenate(tensors)}, validate=False)
            return [{k: v[i:i + 1] for k, v in out.items()} for i in range(len(tensors))]
        return [self.pipe.engine.infer({name: t}, validate=False) for t in tensors]

    def _finish(self, out, prepared):
        if self.ensemble:  # check_finite in the members' runs raises here, inside the request's own try
            out = self.pipe.infer(prepared)
        return self.pipe.finish(out, prepared)

    def _tensors(self, results: list, pb) -> list:
        return [pb.Tensor(name, array) for name, array in self.task.served_arrays(results).items()]

    def finalize(self) -> None:
        self.pipe.close()
