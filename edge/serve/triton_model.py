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
(C = 1 for grey); for a signal model instead ``SIGNAL_FP32``: (B, T, leads) pre-cut beats in mV with ``FS``
(B, 1), their rate in Hz, the leads the model reads in its order (the config's ``leads``); ``TENSOR``: (B, *model
input without batch) already preprocessed float32 (not for an ensemble, whose members each preprocess the frame
their own way). A model with inputs beside the main one takes each as its own (B, K) float32 tensor under the
manifest's name, in every request (the config's ``features`` names them and their order).
Outputs by task: ``PROBABILITIES`` (B, C) and ``LABEL`` (B, 1) bytes; ``MASK`` (B, H, W) uint8;
``BOXES`` (B, K, 4), ``SCORES`` (B, K), ``CLASSES`` (B, K) int32 (detectors: B = 1).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

IMAGE_INPUTS = ("IMAGE_UINT8", "IMAGE_UINT16", "IMAGE_FP32")  # Triton checks each one's dtype (config.pbtxt)
SIGNAL_INPUT, RATE_INPUT = "SIGNAL_FP32", "FS"
TENSOR_INPUT = "TENSOR"


def _bad_request(pb, message: str):
    """A client error (HTTP 400 / gRPC INVALID_ARGUMENT) where this Python backend can say so."""
    code = getattr(pb.TritonError, "INVALID_ARG", None)
    return pb.TritonError(message, code) if code is not None else pb.TritonError(message)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        import edgemed
        from edgemed.input_kinds import DEFAULT_INPUT_KIND, input_kind
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
        kind = input_kind(params.get("input_kind") or DEFAULT_INPUT_KIND)  # exported before: images only
        self.main_inputs = IMAGE_INPUTS if kind.frames else (SIGNAL_INPUT,)
        self.leads = tuple(params["leads"].split(",")) if params.get("leads") else None  # a beat's, in order
        self.feature_specs = [] if self.ensemble else list(self.pipe.features.specs)

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

        main = (*self.main_inputs, TENSOR_INPUT)
        given = [n for n in main if pb.get_input_tensor_by_name(request, n) is not None]
        if len(given) > 1:  # answering one of them would silently drop the other
            raise InputError(f"the request carries {len(given)} inputs ({', '.join(given)}); each request is one "
                             "frame or one batch", f"send exactly one of {', '.join(main)}")
        if not given:
            raise InputError("the request has no input", f"send one of {', '.join(main)}")
        cases = pb.get_input_tensor_by_name(request, given[0]).as_numpy()
        features = self._features(request, pb, len(cases))
        if given[0] == TENSOR_INPUT:
            return self._tensors_given(cases, features)
        if given[0] == SIGNAL_INPUT:
            return self._beats(cases, pb.get_input_tensor_by_name(request, RATE_INPUT), features)
        if cases.ndim != 4:
            raise InputError(f"{given[0]} has shape {cases.shape}, not (B, H, W, C)",
                             "send frames with a batch axis first and a channel axis last (1 for grey)")
        if self.task.ragged_outputs and len(cases) != 1:
            raise InputError(f"a detector answers one frame per request, got {len(cases)}",
                             "send one frame per request (Triton batches requests)")
        return [self.pipe.prepare(f, **self._described(features, i)) for i, f in enumerate(cases)]

    def _tensors_given(self, x: np.ndarray, features: list[dict] | None) -> list:
        from edgemed.errors import InputError
        from edgemed.preprocess import Prepared

        if self.ensemble:  # the config declares no TENSOR for an ensemble; never guess one
            raise InputError("an ensemble takes frames: each member preprocesses them its own way",
                             f"send raw frames as one of {', '.join(IMAGE_INPUTS)}")
        want = tuple(self.pipe.bundle.manifest.input.static_shape[1:])
        if x.dtype != np.float32 or x.shape[1:] != want or not np.isfinite(x).all():
            raise InputError(f"TENSOR must be finite float32 (B, {', '.join(map(str, want))}), got {x.dtype} "
                             f"{x.shape}", f"send preprocessed tensors, or raw inputs as {self.main_inputs[0]}")
        return [Prepared(t[None], tuple(want[-2:]), [],
                         None if features is None else self.pipe.features.one(features[i], None))
                for i, t in enumerate(x)]

    def _beats(self, beats: np.ndarray, rate, features: list[dict] | None) -> list:
        from edgemed.errors import InputError

        if beats.ndim != 3:
            raise InputError(f"{SIGNAL_INPUT} has shape {beats.shape}, not (B, T, leads)",
                             "send beat windows with a batch axis first and a lead axis last (1 for one lead)")
        fs = None if rate is None else rate.as_numpy().reshape(-1)
        if fs is None or len(fs) != len(beats):
            raise InputError(f"{SIGNAL_INPUT} needs its sampling rate: {RATE_INPUT} (B, 1) in Hz, one per beat",
                             f"send {RATE_INPUT} beside the beats, e.g. [[360.0]]")
        return [self.pipe.prepare(b, fs=float(fs[i]), units="mV", leads=self.leads, **self._described(features, i))
                for i, b in enumerate(beats)]

    def _features(self, request, pb, cases: int) -> list[dict] | None:
        """Each case's features by name, from the request's tensor per input (None: the model reads none)."""
        from edgemed.errors import InputError

        if not self.feature_specs:
            return None
        rows: list[dict] = [{} for _ in range(cases)]
        for spec in self.feature_specs:
            tensor = pb.get_input_tensor_by_name(request, spec.name)
            x = None if tensor is None else tensor.as_numpy()
            if x is None or x.shape != (cases, len(spec.features)):
                got = "none" if x is None else f"shape {x.shape}"
                raise InputError(f"input {spec.name!r} must be ({cases}, {len(spec.features)}) float32 "
                                 f"({', '.join(spec.features)} per case), got {got}",
                                 f"send {spec.name} beside the main input, one row per case")
            for row, values in zip(rows, x.tolist()):
                row.update(zip(spec.features, values))
        return rows

    @staticmethod
    def _described(features: list[dict] | None, i: int) -> dict:
        return {} if features is None else {"features": features[i]}

    def _infer(self, prepared: list) -> list:
        """Each prepared frame's engine output: one batched call where the artifact takes a batch. An ensemble's
        members and views run frame by frame in :meth:`_finish`, where an error is that request's alone."""
        if self.ensemble:
            return prepared
        name = self.pipe.input_name
        if self.batched and len(prepared) > 1:
            feeds = [p.feed(name) for p in prepared]
            out = self.pipe.engine.infer({k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]},
                                         validate=False)
            return [{k: v[i:i + 1] for k, v in out.items()} for i in range(len(prepared))]
        return [self.pipe.engine.infer(p.feed(name), validate=False) for p in prepared]

    def _finish(self, out, prepared):
        if self.ensemble:  # check_finite in the members' runs raises here, inside the request's own try
            out = self.pipe.infer(prepared)
        return self.pipe.finish(out, prepared)

    def _tensors(self, results: list, pb) -> list:
        return [pb.Tensor(name, array) for name, array in self.task.served_arrays(results).items()]

    def finalize(self) -> None:
        self.pipe.close()
