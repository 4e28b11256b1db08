"""The ensemble at run time: each member's own pipeline (its preprocessing, its artifact chosen by the usual
selection, its engine), every view of every member run in turn, one combined result of the usual type.

Must not import torch or onnx (the runtime path).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from ..errors import BundleError, OptionError
from ..io.images import read_image
from ..pipeline import Pipeline, open_pipeline
from ..postprocess import check_finite
from ..tasks import combine as comb
from ..tasks import task_named
from .files import BAKED_OUTPUT
from .opening import OpenedEnsemble, open_ensemble


class EnsemblePipeline:
    """What ``edgemed.load(ENSEMBLE)`` returns: ``predict(frame)`` gives the combined result;
    ``predict(frame, members=True)`` also sets ``result.members``, each member's own result on the plain frame
    (what ``edgemed.load(member).predict(frame)`` would give), at no extra inference."""

    def __init__(self, opened: OpenedEnsemble, members: list[Pipeline], baked: Any = None) -> None:
        m = opened.manifest
        self.baked = baked  # an ONNX Runtime engine on the one-graph form, where it serves (see load_ensemble)
        self.ensemble = opened
        self.path = opened.path
        self.members = members
        self.task = m.task
        self.task_rules = task_named(m.task)  # how outputs combine and read (edgemed.tasks)
        self.labels = list(m.labels)
        self.combine = m.combine
        self.views = m.views
        self.weights = comb.normalised([x.weight for x in m.members], len(self.views))
        self.input_kind = "image"  # check_members refuses signal models
        self.reason = "; ".join(f"{rec.folder}: {p.artifact.key}, {p.reason}" for rec, p in zip(m.members, members))
        if baked is not None:
            measured = "" if m.baked is None else (f": p50 {m.baked.baked_ms:.3f} ms against {m.baked.members_ms:.3f} "
                                                   "ms member by member, measured when the ensemble was made")
            self.reason = f"one graph{measured} of the members' FP32 ONNX: {self.reason}"

    # -- stages --------------------------------------------------------------------------------
    def member_outputs(self, image: np.ndarray | str | Path) -> tuple[list, list[list[np.ndarray]]]:
        """Each member's prepared input and, per view, its first output (segmentation maps flipped back onto the
        frame's pixels): what :meth:`predict` combines, for tests and the gate."""
        if isinstance(image, (str, Path)):
            image = read_image(image)
        prepared = [p.prepare(image) for p in self.members]  # the members' own, baked or not
        return prepared, self._infer_members(prepared)

    def prepare(self, image: np.ndarray | str | Path) -> list:
        """Every member's prepared input (its own preprocessing) of one frame; baked, the one input they share."""
        if isinstance(image, (str, Path)):
            image = read_image(image)  # read once, not once per member
        if self.baked is not None:
            return [self.members[0].prepare(image)]  # members of a baked ensemble preprocess alike (checked)
        return [p.prepare(image) for p in self.members]

    def infer(self, prepared: list) -> Any:
        """Every member's output on every view (maps flipped back); baked, the graph's combined output."""
        if self.baked is not None:
            tensor = prepared[0].tensor
            outputs = self.baked.infer({self.members[0].input_name: tensor}, validate=False)
            check_finite(outputs, tensor)
            return _Combined(outputs[BAKED_OUTPUT])
        return self._infer_members(prepared)

    def _infer_members(self, prepared: list) -> list[list[np.ndarray]]:
        return [[self._run(p, prep.tensor, view) for view in self.views] for p, prep in zip(self.members, prepared)]

    def _run(self, pipe: Pipeline, tensor: np.ndarray, view: str) -> np.ndarray:
        seen = comb.flip_input(tensor, view, pipe.bundle.manifest.input.layout)
        outputs = pipe.engine.infer({pipe.input_name: seen}, validate=False)
        check_finite(outputs, seen)
        out = outputs[pipe.output_name]
        return comb.unflip_output(out, view) if self.task_rules.spatial else out

    def combined_output(self, prepared: list, outputs: list[list[np.ndarray]]) -> tuple[np.ndarray, str]:
        """The ensemble's raw answer from :meth:`member_outputs` and how to read it: class scores (1, C) or maps
        (1, C, h, w) at the model's resolution, as ``logits`` (mean-logits) or ``probabilities`` (the mean of
        probabilities, or vote shares). The gate compares these like a single model's outputs."""
        if isinstance(outputs, _Combined):  # the graph combined already (converters.ensemble_graph): read as one
            kind = "logits" if self.combine == "mean-logits" else "probabilities"
            return self.task_rules.combine([outputs.output], [kind], [1.0], f"mean-{kind}")
        flat = [o for per_member in outputs for o in per_member]
        kinds = [p.output_kind for p in self.members for _ in self.views]
        return self.task_rules.combine(flat, kinds, self.weights, self.combine)

    def combined(self, prepared: list, outputs: list[list[np.ndarray]]):
        """The combined result from :meth:`member_outputs`."""
        output, kind = self.combined_output(prepared, outputs)
        geometry = prepared[0].geometry
        if self.task_rules.spatial and any(p.geometry != geometry for p in prepared[1:]):
            # check_members makes this impossible; never guess
            raise BundleError(f"ensemble {self.path}: members mapped the frame differently",
                              "rebuild the ensemble from segmenters with the same resize/crop steps")
        return self.task_rules.combined_result(output, kind, geometry, self.labels)

    # -- streaming (edgemed.streaming runs an ensemble through prepare/infer/finish, as it runs a Pipeline) -----
    def finish(self, outputs: list[list[np.ndarray]], prepared: list):
        """The combined result."""
        return self.combined(prepared, outputs)

    def stream(self, frames: Iterable[np.ndarray], fps: float | None = None, maxsize: int = 2, results: int = 2):
        """:meth:`edgemed.pipeline.Pipeline.stream` for the ensemble: every member and view of a frame runs in
        the inference stage, so a deadline sees the ensemble's whole cost (``last_stream_stats``)."""
        from ..streaming import stream

        return stream(self, frames, fps=fps, maxsize=maxsize, results=results)

    def streamer(self, maxsize: int = 2, drop_oldest: bool = True):
        """Callback form: ``s = ens.streamer(); fut = s.submit(frame); fut.result()``."""
        from ..streaming import Streamer

        return Streamer(self, maxsize=maxsize, drop_oldest=drop_oldest)

    # -- public --------------------------------------------------------------------------------
    def predict(self, image: np.ndarray | str | Path, members: bool = False):
        """One frame in, the ensemble's result out (timings summed over members and views)."""
        if members and self.baked is not None:  # members' own answers need the members' own runs
            return self.members_form().predict(image, members=True)
        t0 = time.perf_counter()
        prepared = self.prepare(image)
        t1 = time.perf_counter()
        outputs = self.infer(prepared)
        t2 = time.perf_counter()
        result = self.combined(prepared, outputs)
        if members:
            result.members = [p.finish({p.output_name: outs[0]}, prep)
                              for p, prep, outs in zip(self.members, prepared, outputs)]
        t3 = time.perf_counter()
        result.timings = {"preprocess": t1 - t0, "infer": t2 - t1, "postprocess": t3 - t2}
        return result

    def describe(self) -> dict:
        """The ensemble's recipe and each member's own description (artifact, why, verdict)."""
        m = self.ensemble.manifest
        return {"ensemble": str(self.path), "task": self.task, "combine": self.combine, "tta": list(m.tta),
                "form": "baked: one graph" if self.baked is not None else "members, one engine call per view",
                "views": len(self.views), "runs_per_frame": len(self.views) * len(self.members),
                "combination_gate": None if m.gate is None else {
                    "served": list(m.gate.served), "device": m.gate.device, "verdict": m.gate.drift.verdict,
                    "budget": m.gate.drift.budget, "cases": m.gate.drift.cases, "missed": list(m.gate.drift.missed)},
                "members": [{"folder": rec.folder, "weight": rec.weight, **p.describe()}
                            for rec, p in zip(m.members, self.members)]}

    def members_form(self) -> EnsemblePipeline:
        """The same ensemble run member by member on the same engines (what the baked graph stands for)."""
        return EnsemblePipeline(self.ensemble, self.members)

    def without_flips(self) -> EnsemblePipeline:
        """The same members, on the same engines, combined without test-time flips (bench times the two side by
        side). The engines are shared: closing either pipeline closes them for both."""
        m = self.ensemble.manifest
        opened = OpenedEnsemble(self.path, msgspec.structs.replace(m, tta=[]), self.ensemble.members)
        return EnsemblePipeline(opened, self.members)

    def close(self) -> None:
        for p in self.members:
            p.close()
        if self.baked is not None:
            self.baked.close()

    def __enter__(self) -> EnsemblePipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Combined:
    """The baked graph's output: already the combination (what ``combined_output`` reads as it is)."""

    __slots__ = ("output",)

    def __init__(self, output: np.ndarray) -> None:
        self.output = output


def load_ensemble(path: str | Path, device: str = "cpu", backend: str | None = None, precision: str | None = None,
                  threads: int | None = None, require_signature: str | Path | None = None, accept: str | None = None,
                  certifiers: Sequence[str | Path] = (), callers: int = 1, form: str | None = None
                  ) -> EnsemblePipeline:
    """Verify the ensemble (its signature with ``require_signature``, which covers every member file; the chain of
    hashes otherwise) and open each member with the usual selection: ``backend``/``precision``/``accept`` apply to
    every member, and each member's artifact is chosen among its own passed ones (``device="auto"`` measures per
    member)."""
    if require_signature is not None:
        from ..signing import verify_signature

        verify_signature(Path(path), Path(require_signature))
    opened = open_ensemble(path, require_signature=require_signature, certifiers=certifiers)
    pipes: list[Pipeline] = []
    try:
        for b in opened.members:
            pipes.append(open_pipeline(b, device, backend, precision, threads, accept, callers))
    except BaseException:
        for p in pipes:
            p.close()
        raise
    return EnsemblePipeline(opened, pipes, _baked_engine(opened, pipes, device, threads, form))


def _baked_engine(opened: OpenedEnsemble, pipes: list[Pipeline], device: str, threads: int | None,
                  form: str | None) -> Any:
    """The one-graph form's engine where it serves: recorded faster (or ``form="baked"``), and every member on its
    ONNX Runtime FP32 artifact on the CPU (the graph is made of exactly those, so their verdicts hold for it);
    ``form="members"`` never. None otherwise."""
    if form not in (None, "baked", "members"):
        raise OptionError(f"form {form!r} is not an ensemble form", "use 'baked', 'members' or leave it out")
    baked = opened.manifest.baked
    if form == "members" or baked is None:
        if form == "baked":
            why = opened.manifest.bake_note or "made before edgemed baked ensembles"
            raise OptionError(f"ensemble {opened.path} has no baked graph ({why})", "load it without form='baked'")
        return None
    fp32 = all(p.artifact.key == "onnxruntime/fp32" and p.selection.device == "cpu" for p in pipes)
    if form == "baked" and not fp32:
        raise OptionError("the baked graph is made of every member's ONNX Runtime FP32 artifact; this load chose "
                          + ", ".join(p.artifact.key for p in pipes), "load with backend='onnxruntime', "
                          "precision='fp32' on the CPU")
    if not fp32 or (form is None and not baked.serves) or device not in ("cpu", "auto"):
        return None
    from ..runtimes.onnxruntime import OnnxRuntimeEngine

    return OnnxRuntimeEngine(opened.path / baked.file.file, device="cpu", threads=threads)
