"""``edgemed bench ENSEMBLE``: what the ensemble costs and buys against its own members, side by side in one run.

Configurations, all on the engines the ensemble opened (each member's artifact as the usual selection chose it):
the ensemble as it serves; each member alone (its own ``predict``: its preprocessing, its engine); and, where the
ensemble has test-time flips and more than one member, the same members combined without flips (with one member,
that is the member itself). ``predict`` of every configuration is timed on the same frames in blocks whose order is
permuted every round (:mod:`edgemed.benchmarks.side_by_side`): on a shared machine the ratios hold, figures from two
runs do not compare.

With labels, each configuration is scored on every case (accuracy with its bounds, or Dice per class), and each
ensemble configuration is paired with the best member on the same cases: the gain with a two-sided 95% interval
(each bound one-sided 97.5%; exact from the discordant cases for accuracy, a seeded bootstrap of the mean paired
Dice difference for masks), so a gain whose interval holds zero reads as "not shown by these cases".

The report keeps ``edgemed-bench/2``: ``artifacts[]`` holds one row per configuration (``configuration``:
``ensemble``, ``ensemble without flips`` or ``member``; ``latency.end_to_end`` as for a bundle; ``accuracy``;
``score`` (mean per-case accuracy or Dice); ``cost_vs_member``; ``vs_best_member`` on the ensemble rows;
``point_of_care`` and ``drift_on_data`` (the combination against the FP32 combination on the bench data) on the
ensemble row), and ``ensemble`` the recipe, the best member and the combination's gate.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np

from edgemed.ensemble.files import ENSEMBLE
from edgemed.ensemble.runtime import EnsemblePipeline, load_ensemble
from edgemed.errors import OptionError
from edgemed.hashing import sha256_file
from edgemed.tasks import task_named

from .bench_data import bench_data
from .bench_header import SCHEMA, bench_versions, bench_workload
from .harness import latency_stats
from .scenarios import point_of_care
from .side_by_side import BLOCK, paired_gain, permuted_latency

TWO_SIDED_95 = 0.975  # each bound one-sided at 97.5%: together a two-sided 95% interval


def run_ensemble_bench(path: Path, device: str = "cpu", backend: str | None = None, precision: str | None = None,
                       all_artifacts: bool = False, scenario: str | None = None, data: Path | None = None,
                       labels: Path | None = None, fps: float = 30.0, duration: float = 10.0,
                       threads: int | None = None, runs: int = 300, warmup: int = 20, limit: int | None = None,
                       data_key: str | None = None, accept: str | None = None, record: Path | None = None,
                       log: Callable[[str], None] = lambda s: None) -> dict:
    if all_artifacts:
        raise OptionError(f"--all on the ensemble {path}: an ensemble serves one artifact per member",
                          f"bench a member with --all (edgemed bench {path}/members/NAME --all)")
    if scenario == "remote":
        raise OptionError("--scenario remote is not measured for ensembles (cold start, energy)",
                          "use --scenario point-of-care, or bench each member bundle with --scenario remote")
    if record is not None:
        raise OptionError(f"--record {record}: ensembles combine image models, not signals", "drop --record")
    # The device first (load selects each member's artifact): asking for a Jetson is said before data is read.
    with load_ensemble(path, device, backend, precision, threads, accept=accept) as ens:
        opened = ens.ensemble
        first = opened.members[0]
        shipped = all(b.manifest.model.shipped is not None for b in opened.members)
        source = bench_data(first, data, labels, limit, data_key, shipped_samples=shipped)
        frames, truth = source.frames, source.truth
        log(f"data: {source.source}")
        configs = _configurations(ens)
        rows = {name: row for name, (row, _) in configs.items()}
        pipes = {name: pipe for name, (_, pipe) in configs.items()}
        calls = max(BLOCK, runs)
        log(f"timing {len(pipes)} configurations side by side: {calls} predict calls each, permuted blocks of "
            f"{BLOCK}")
        times = permuted_latency(pipes, frames, calls, warmup=max(1, min(warmup, len(frames))))
        for name, row in rows.items():
            row["latency"] = {"end_to_end": latency_stats(times[name]),
                              "method": f"{calls} predict calls per configuration on the same frames, blocks of "
                                        f"{BLOCK} in an order permuted every round"}
        scores = {}
        if truth is not None:
            for name, pipe in pipes.items():
                log(f"scoring {name} on {len(frames)} labelled cases")
                results = [pipe.predict(f) for f in frames]
                rows[name]["accuracy"], scores[name] = _scored(ens.task, truth, results, ens.labels)
                rows[name]["score"] = float(np.mean(scores[name]))
        members = [n for n, r in rows.items() if r["configuration"] == "member"]
        best = max(members, key=lambda n: rows[n]["score"]) if scores else members[0]
        for name, row in rows.items():
            row["cost_vs_member"] = (row["latency"]["end_to_end"]["p50_ms"]
                                     / rows[best]["latency"]["end_to_end"]["p50_ms"])
            if scores and row["configuration"] != "member":
                row["vs_best_member"] = {"member": best, "confidence": 0.95, "interval": "two-sided",
                                         **paired_gain(scores[name], scores[best], ens.task, TWO_SIDED_95)}
        rows["ensemble"]["drift_on_data"] = _drift_on_data(path, ens, source.images, device, backend, precision,
                                                           accept, log)
        if scenario == "point-of-care":
            log(f"point-of-care: the ensemble at {fps:g} fps for {duration:g} s")
            rows["ensemble"]["point_of_care"] = point_of_care(ens, frames, fps, duration)
        m = opened.manifest
        summary = {"combine": m.combine, "tta": list(m.tta), "members": [r.folder for r in m.members],
                   "weights": [r.weight for r in m.members], "runs_per_frame": len(m.views) * len(m.members),
                   "best_member": best if scores else None, "cost_reference": best,
                   "combination_gate": None if m.gate is None else {
                       "served": list(m.gate.served), "device": m.gate.device, "verdict": m.gate.drift.verdict,
                       "drift": msgspec.to_builtins(m.gate.drift)}}
    return {
        "schema": SCHEMA, "bundle": str(path), "bundle_sha256": sha256_file(Path(path) / ENSEMBLE),
        "model": Path(path).resolve().name, "task": ens.task, "input_kind": "image", "device": device,
        "scenario": scenario or "latency",
        "data": {"from": source.source, "images": len(frames), "available": source.available,
                 "labels": truth is not None},
        "workload": bench_workload(source.images, scenario, fps, duration, threads),
        "artifacts": list(rows.values()), "ensemble": summary,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(), "versions": bench_versions(),
    }


def _configurations(ens: EnsemblePipeline) -> dict[str, tuple[dict, object]]:
    """Name -> (report row without figures, what to call ``predict`` on), on the ensemble's own engines."""
    m = ens.ensemble.manifest
    served = [p.artifact for p in ens.members]
    kinds = {(a.backend, a.precision) for a in served}
    backend, precision = next(iter(kinds)) if len(kinds) == 1 else ("mixed", "mixed")
    keys = [a.key for a in served]
    gate = m.gate if m.gate is not None and list(m.gate.served) == keys else None
    whole = {"backend": backend, "precision": precision, "bytes": sum(a.size_bytes for a in served),
             "served": keys}
    out: dict[str, tuple[dict, object]] = {"ensemble": (
        {"configuration": "ensemble", "file": ENSEMBLE, **whole, "runs_per_frame": len(m.views) * len(m.members),
         "verdict": gate.drift.verdict if gate else "uncertified", "selectable": True,
         "gate": msgspec.to_builtins(gate.drift) if gate else None,
         **({} if gate else {"note": "the combination's gate at creation covers another selection "
                                     f"({', '.join(m.gate.served)})" if m.gate else "the combination was not gated"})},
        ens)}
    if m.tta and len(m.members) > 1:
        out["ensemble without flips"] = (
            {"configuration": "ensemble without flips", "file": f"{ENSEMBLE} (no flips)", **whole,
             "runs_per_frame": len(m.members), "verdict": "uncertified", "selectable": False,
             "note": "for comparison only: this ensemble always runs its flips"}, ens.without_flips())
    for rec, pipe in zip(m.members, ens.members):
        a = pipe.artifact
        out[rec.folder] = ({"configuration": "member", "file": f"{rec.folder}/{a.file}", "backend": a.backend,
                            "precision": a.precision, "bytes": a.size_bytes, "runs_per_frame": 1,
                            "weight": rec.weight, "verdict": a.verdict, "selectable": a.verdict == "passed"}, pipe)
    return out


def _drift_on_data(path: Path, ens: EnsemblePipeline, images, device: str, backend: str | None,
                   precision: str | None, accept: str | None, log: Callable[[str], None]) -> dict | None:
    """The combination as it serves against the FP32 combination on the bench data, by the gate's rule (what
    ``make_ensemble`` judged on its few stored frames); None where a member has no passed ONNX Runtime FP32 artifact
    to be the reference."""
    from edgemed.ensemble.gate import judge_combination

    if not all((a := b.manifest.artifact("onnxruntime", "fp32")) is not None and a.verdict == "passed"
               for b in ens.ensemble.members):
        log("drift on the bench data not judged: every member needs a passed ONNX Runtime FP32 artifact")
        return None
    gate = judge_combination(path, images, device, f"the bench data ({len(images)} frames)", log, backend=backend,
                             precision=precision, accept=accept)
    return msgspec.to_builtins(gate.drift)


def _scored(task: str, truth: list, results: list, labels: list[str]) -> tuple[dict, np.ndarray]:
    """The report against ground truth (as a bundle's) and the per-case score the pairing uses: 1/0 correct, or
    the mean Dice over foreground classes."""
    t = task_named(task)
    return t.truth_report(truth, results, labels, None), t.truth_per_case(truth, results, labels)
