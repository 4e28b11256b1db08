"""``edgemed bench``: every requested artifact measured side by side, with drift and accuracy.

The JSON it returns (and writes with ``--json``) is the documented, stable interface:
``{"schema": "edgemed-bench/2", "bundle", "bundle_sha256", "model", "task", "device", "scenario", "data",
"artifacts": [{"file", "backend", "precision", "bytes", "verdict", "gate", "latency", "drift_reference",
"drift_on_data", "dice_per_case", "accuracy", "point_of_care" | "remote"}], "created", "versions"}``.
Artifacts of an ``--explain`` bundle judged on saliency drift at conversion also carry ``saliency_on_data`` (the
term judged again on the bench data) and ``worst_saliency`` (its worst cases as pictures), except the FP32 ONNX
Runtime reference itself. Every artifact of an ``--explain`` bundle carries ``explanation_cost``: predict p50
without the explanation, with it and with the map read, on one engine side by side, and their ratios.
``gate`` is the artifact's drift record from conversion; ``drift_reference`` and ``drift_on_data``
are drift records (verdict, budget, cases, metrics) judged on this device by the same rule.
``selectable``: whether the artifact passed its gate (only those are ever selected); ``--all``
measures every artifact, failed and uncertified ones too, marked so (``note``).

An ensemble (``edgemed ensemble``) is measured by :mod:`edgemed.benchmarks.ensemble_bench`, same schema:
``bundle_sha256`` is its ``ensemble.json``'s; ``artifacts[]`` holds one row per configuration timed side by side
(``configuration``: ``ensemble``, ``ensemble without flips`` where it has flips and several members, ``member``;
each with ``file``, ``backend``, ``precision`` (``mixed`` where members differ), ``bytes``, ``runs_per_frame``,
``verdict``, ``selectable``, ``latency.end_to_end``, ``cost_vs_member`` (p50 over the best member's, or the first
member's without labels), with labels ``accuracy`` and ``score``, on ensemble rows ``vs_best_member``
(``member``, ``gain``, ``low``, ``high``: a two-sided 95% interval, ``cases``, ``method``; for accuracy also
``only_member_right``, ``only_ensemble_right``, ``p_mcnemar``), on the ensemble row ``point_of_care`` with
``--scenario point-of-care`` and ``drift_on_data``, the combination against the FP32 combination on the bench
data); and a new key ``ensemble``: ``combine``, ``tta``, ``members``, ``weights``,
``runs_per_frame``, ``best_member``, ``cost_reference``, ``combination_gate`` (``served``, ``device``, ``verdict``,
``drift``).
"""

from __future__ import annotations

import datetime as _dt
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from edgemed import load
from edgemed.bundle import Bundle
from edgemed.errors import BackendUnavailable
from edgemed.gate.drift import compare, population_margins
from edgemed.gate.verdict import recheck
from edgemed.input_kinds import input_kind
from edgemed.selection import select
from edgemed.tasks import task_named

from .bench_data import bench_data
from .bench_header import SCHEMA, bench_versions, bench_workload
from .explanation_cost import explanation_cost
from .harness import bench_drift, bench_latency
from .saliency_cases import class_maps, has_saliency_term
from .saliency_cases import versus_fp32 as saliency_versus_fp32
from .scenarios import point_of_care, remote
from .worst_cases import versus_fp32, versus_truth


def run_bench(bundle: Path, device: str = "cpu", backend: str | None = None, precision: str | None = None,
              all_artifacts: bool = False, scenario: str | None = None, data: Path | None = None,
              labels: Path | None = None, fps: float = 30.0, duration: float = 10.0, threads: int | None = None,
              runs: int = 300, warmup: int = 20, limit: int | None = None, data_key: str | None = None,
              accept: str | None = None, record: Path | None = None, log=lambda s: None) -> dict:
    from edgemed.ensemble.files import is_ensemble

    if is_ensemble(bundle):  # the ensemble against its members, side by side (edgemed.benchmarks.ensemble_bench)
        from .ensemble_bench import run_ensemble_bench

        return run_ensemble_bench(Path(bundle), device, backend, precision, all_artifacts, scenario, data, labels, fps,
                                  duration, threads, runs, warmup, limit, data_key, accept, record, log)
    b = Bundle.open(bundle)
    # The device first: asking for a Jetson on a laptop is said before any data is read.
    chosen = select(b, device, backend, precision, threads, accept)
    if record is not None and not input_kind(b.manifest.model.input_kind).recordings:
        from edgemed.errors import OptionError

        raise OptionError(f"--record {record}: {b.name} reads images, not signals", "drop --record")
    source = bench_data(b, data, labels, limit, data_key)
    log(f"data: {source.source}")
    run = _Run(Path(bundle), b, task_named(b.task), source, device, threads, runs, warmup, scenario, fps, duration,
               record)
    per_artifact = [_bench_artifact(run, art, art is chosen.artifact, log)
                    for art in (b.artifacts if all_artifacts else [chosen.artifact])]
    return {
        "schema": SCHEMA, "bundle": str(bundle), "bundle_sha256": b.manifest_sha256(),
        "model": b.name, "task": b.task, "input_kind": b.manifest.model.input_kind, "device": device,
        "scenario": scenario or "latency",
        "data": {"from": source.source, "images": len(source.images), "available": source.available,
                 "labels": source.truth is not None},
        "workload": bench_workload(source.images, scenario, fps, duration, threads),
        "artifacts": per_artifact,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(), "versions": bench_versions(),
    }


@dataclass
class _Run:
    """What every artifact of one bench run shares: the bundle, its data and settings, and the on-device FP32
    references, each made once, by the first artifact that needs it."""

    bundle: Path
    b: Bundle
    task: Any
    source: Any  # BenchData: images (names), frames, truth
    device: str
    threads: int | None
    runs: int
    warmup: int
    scenario: str | None
    fps: float
    duration: float
    record: Path | None
    reference: tuple | None = None  # FP32 ONNX Runtime's outputs and masks on the frames: every artifact's reference
    population: Any = None  # their decision margins
    saliency: tuple | None = None  # --explain bundles: FP32's classes and maps on the same frames

    def compare(self, pipe, outputs: Any) -> Any:
        """The artifact's outputs against FP32's on the same frames (the reference made on first use)."""
        if self.reference is None:
            self.reference = _fp32_outputs(self.bundle, self.source.frames, self.device, self.threads)
            self.population = population_margins(self.reference[0], self.b.task, pipe.output_kind)
        return compare(self.reference[0], outputs, self.b.task, pipe.output_kind, self.b.labels)

    def fp32_saliency(self) -> tuple:
        if self.saliency is None:
            self.saliency = _fp32_saliency(self.bundle, self.source.frames, self.device, self.threads)
        return self.saliency


def _artifact_row(art) -> dict:
    """What the bundle says of an artifact. Every artifact is measured: whether to collect the cases that would
    certify an INT8 artifact depends on its speed. One that did not pass is marked, and never selected (load, auto,
    serve never hand it over)."""
    row = {"file": art.file, "backend": art.backend, "precision": art.precision, "bytes": art.size_bytes,
           "verdict": art.verdict, "gate": msgspec.to_builtins(art.drift),
           "clinical": msgspec.to_builtins(art.clinical) if art.clinical else None,
           "selectable": art.verdict == "passed"}
    if not row["selectable"]:
        row["note"] = (f"{art.verdict} at conversion: measured, never selected (load/predict use it only when named "
                       "with --accept)")
    return row


def _bench_artifact(run: _Run, art, chosen: bool, log) -> dict:
    """One artifact's row: latency, drift against the bundle's probes and against FP32 on the data, per-case
    figures and worst cases, accuracy against truth, and the scenario's figures."""
    row = _artifact_row(art)
    log(f"benchmarking {art.key}" + ("" if row["selectable"] else f" ({art.verdict}: not selectable)"))
    try:
        opened = load(run.bundle, device=run.device, backend=art.backend, precision=art.precision,
                      threads=run.threads, accept=None if art.verdict == "passed" else art.verdict)
    except BackendUnavailable as exc:  # e.g. a TensorRT engine on a machine without TensorRT: said, not fatal
        if chosen:
            raise
        row["skipped"] = f"not measurable on this device: {exc}"
        return row
    b, task, frames, names = run.b, run.task, run.source.frames, run.source.images.names
    with opened as pipe:
        row["engine"] = pipe.engine.describe()
        row["latency"] = bench_latency(pipe, frames, runs=run.runs, warmup=run.warmup)
        if pipe.explainer is not None:  # --explain: what the explanation costs predict, side by side
            row["explanation_cost"] = explanation_cost(pipe, frames, runs=run.runs, warmup=run.warmup)
        row["drift_reference"] = msgspec.to_builtins(
            recheck(art.drift, bench_drift(pipe), b.task, "the bundle's reference probes"))
        outputs, results = _run_frames(pipe, frames)
        comparison = run.compare(pipe, outputs)
        row["drift_on_data"] = msgspec.to_builtins(recheck(art.drift, comparison, b.task, "the bench data",
                                                           run.population))
        row.update(_per_case(run, comparison, results))
        reference = (art.backend, art.precision) == ("onnxruntime", "fp32")  # against itself it shows nothing
        if not reference:
            row["worst_vs_fp32"] = versus_fp32(b.task, names, frames, results, comparison, b.labels,
                                               run.reference[1])
        if pipe.explainer is not None and has_saliency_term(art) and not reference:  # where the maps moved, and how
            classes, fp32_maps = run.fp32_saliency()
            row.update(saliency_versus_fp32(names, frames, b.labels, classes, fp32_maps,
                                            class_maps(pipe, frames, classes)[1]))
        if run.source.truth is not None:
            row["accuracy"] = task.truth_report(run.source.truth, results, b.labels, b.manifest.postprocess)
            row["worst_vs_truth"] = versus_truth(b.task, names, frames, results, run.source.truth, b.labels)
        if run.record is not None:
            from .signal_stream import stream_record

            row["record"] = stream_record(pipe, run.record)
        if run.scenario == "point-of-care":
            row["point_of_care"] = point_of_care(pipe, frames, run.fps, run.duration)
        profile = pipe.profile
    if run.scenario == "remote":
        with tempfile.TemporaryDirectory() as tmp:
            row["remote"] = remote(run.bundle, art, frames[0], Path(tmp), profile, runs=run.runs)
    return row


def _per_case(run: _Run, comparison: Any, results: list) -> dict:
    """The comparison's per-case figure: Dice per case and the worst case's masks side by side (maps), or whether
    each case kept FP32's call (classification) or its boxes (detection)."""
    case = comparison.per_case[run.task.case_figure]
    if not run.task.spatial:
        return {"agreement_per_case": case.astype(bool).tolist()}
    case = case.tolist()
    worst = int(np.argmin(case))
    frame = run.source.frames[worst]
    return {"dice_per_case": case,
            "worst_case": {"name": run.source.images.names[worst], "dice_vs_fp32": case[worst],
                           "fp32_overlay_png": _thumb(frame, run.reference[1][worst]),
                           "overlay_png": _thumb(frame, results[worst].mask)}}


def _fp32_outputs(bundle: Path, frames: list, device: str, threads: int | None):
    """Outputs and masks of the bundle's FP32 ONNX Runtime artifact on the same frames (the on-device reference)."""
    with load(bundle, device=device, backend="onnxruntime", precision="fp32", threads=threads) as ref:
        outputs, results = _run_frames(ref, frames)
    return outputs, [r.mask for r in results] if task_named(ref.task).spatial else None


def _fp32_saliency(bundle: Path, frames: list, device: str, threads: int | None) -> tuple[list[int], list]:
    """FP32 ONNX Runtime's class and map per frame: what each artifact's map of that class is compared with."""
    with load(bundle, device=device, backend="onnxruntime", precision="fp32", threads=threads) as ref:
        return class_maps(ref, frames)


def _run_frames(pipe, frames: list) -> tuple[Any, list]:
    """Outputs as drift compares them (:class:`edgemed.output_reader.OutputReader`) and results for every
    frame, preprocessing and inferring each frame once."""
    outputs, results = [], []
    for frame in frames:
        prepared = pipe.prepare(frame)
        output = pipe.infer(prepared)
        outputs.append(pipe.reader.one(output))
        results.append(pipe.finish(output, prepared))
    return pipe.reader.collect(outputs), results


def history_rows(report: dict) -> list[dict]:
    rows = []
    for a in report["artifacts"]:
        if "latency" not in a:
            continue
        record = {k: a[k] for k in a if k not in ("engine",)} | {"workload": report["workload"]}
        rows.append({"created": report["created"], "bundle_sha256": report["bundle_sha256"], "model": report["model"],
                     "artifact": a["file"], "backend": a["backend"], "precision": a["precision"],
                     "device": report["device"], "scenario": report["scenario"], "versions": report["versions"],
                     "record": record})
    return rows


def _thumb(frame: np.ndarray, mask: np.ndarray, side: int = 192) -> str:
    """A small base64 PNG overlay, stored with the run so the HTML report needs no images on disk."""
    import base64
    import io

    from PIL import Image

    from edgemed.io.overlay import overlay

    img = Image.fromarray(overlay(frame, mask))
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()
