"""``edgemed bench``: every requested artifact measured side by side, with drift and accuracy.

The JSON it returns (and writes with ``--json``) is the documented, stable interface:
``{"schema": "edgemed-bench/1", "bundle", "model", "task", "device", "scenario", "data",
"artifacts": [{"file", "backend", "precision", "bytes", "gate_passed", "latency", "drift_reference",
"drift_on_data", "accuracy", "point_of_care" | "remote"}], "created", "versions"}``.
"""

from __future__ import annotations

import datetime as _dt
import platform
import tempfile
from pathlib import Path

import numpy as np

from edgemed import load
from edgemed.bundle import Bundle, artifact_bytes
from edgemed.datasets import ImageSet, load_labels
from edgemed.drift import drift_figures
from edgemed.hashing import sha256_file
from edgemed.metrics import classification_report, dice, segmentation_report
from edgemed.samples import samples_dir, samples_for_task

from .harness import bench_drift, bench_latency
from .scenarios import point_of_care, remote

SCHEMA = "edgemed-bench/1"


def _versions() -> dict:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("edgemed", "onnxruntime", "openvino"):
        try:
            out[name] = __import__(name).__version__ if name != "openvino" else __import__(name).get_version()
        except ImportError:
            pass
    return out


def _data(task: str, data: Path | None, labels: Path | None, label_names: list[str], limit: int):
    if data is None:
        images = ImageSet.open(samples_for_task(task))
        if labels is None:
            labels = samples_dir("busi_masks") if task == "segmentation" else samples_dir("breastmnist") / "labels.csv"
    else:
        images = ImageSet.open(data).subset(limit)
    truth = load_labels(labels, images, task, label_names)
    return images, [im for _, im in images], truth


def run_bench(bundle: Path, device: str = "cpu", backend: str | None = None, precision: str | None = None,
              all_artifacts: bool = False, scenario: str | None = None, data: Path | None = None,
              labels: Path | None = None, fps: float = 30.0, duration: float = 10.0, threads: int | None = None,
              runs: int = 300, warmup: int = 20, limit: int = 200, log=lambda s: None) -> dict:
    b = Bundle.open(bundle)
    images, frames, truth = _data(b.task, data, labels, b.labels, limit)
    if all_artifacts:
        targets = [(a["backend"], a["precision"]) for a in b.artifacts]
    else:
        with load(bundle, device=device, backend=backend, precision=precision, threads=threads) as pipe:
            targets = [(pipe.artifact["backend"], pipe.artifact["precision"])]
    reference_outputs = None  # on-device FP32 outputs on the user's data: what every artifact is compared with
    per_artifact, worst_cases = [], []
    for be, pr in targets:
        art = next(a for a in b.artifacts if a["backend"] == be and a["precision"] == pr)
        row = {"file": art["file"], "backend": be, "precision": pr,
               "bytes": artifact_bytes(art),
               "gate_passed": bool(art["drift"].get("passed")), "gate": {k: art["drift"].get(k) for k in
                                                                         ("agreement", "dice", "max_abs_diff")}}
        if not row["gate_passed"]:
            row["skipped"] = "failed the drift gate at conversion; never selected"
            per_artifact.append(row)
            continue
        log(f"benchmarking {be}/{pr}")
        with load(bundle, device=device, backend=be, precision=pr, threads=threads) as pipe:
            row["engine"] = pipe.engine.describe()
            row["latency"] = bench_latency(pipe, frames, runs=runs, warmup=warmup)
            row["drift_reference"] = bench_drift(pipe)
            outputs, results = _run_frames(pipe, frames)
            if reference_outputs is None:
                reference_outputs = _fp32_outputs(bundle, frames, device, threads)
            row["drift_on_data"] = drift_figures(reference_outputs[0], outputs, b.task, pipe.output_kind)
            if b.task == "segmentation":
                case = [dice(r.mask, m, 1) for r, m in zip(results, reference_outputs[1])]
                row["drift_on_data"]["dice_per_case"] = case
                worst = int(np.argmin(case))
                worst_cases.append({"artifact": art["file"], "index": worst, "name": images.names[worst],
                                    "dice_vs_fp32": case[worst]})
                row["worst_case"] = {
                    "name": images.names[worst], "dice_vs_fp32": case[worst],
                    "fp32_overlay_png": _thumb(frames[worst], reference_outputs[1][worst]),
                    "overlay_png": _thumb(frames[worst], results[worst].mask)}
            if truth is not None:
                if b.task == "classification":
                    row["accuracy"] = classification_report(np.array(truth), np.stack([r.probabilities for r in
                                                                                      results]), b.labels)
                else:
                    row["accuracy"] = segmentation_report(truth, [r.mask for r in results], b.labels)
            if scenario == "point-of-care":
                row["point_of_care"] = point_of_care(pipe, frames, fps, duration)
            profile = pipe.profile
        if scenario == "remote":
            with tempfile.TemporaryDirectory() as tmp:
                row["remote"] = remote(Path(bundle), art, frames[0], Path(tmp), profile)
        per_artifact.append(row)
    return {
        "schema": SCHEMA, "bundle": str(bundle), "bundle_sha256": sha256_file(Path(bundle) / "edgemed.json"),
        "model": b.manifest["model"]["name"], "task": b.task, "device": device, "scenario": scenario or "latency",
        "data": {"from": str(images.path), "images": len(images), "labels": truth is not None},
        "artifacts": per_artifact, "worst_cases": worst_cases,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(), "versions": _versions(),
    }


def _fp32_outputs(bundle: Path, frames: list, device: str, threads: int | None):
    """Outputs and masks of the bundle's FP32 ONNX Runtime artifact on the same frames (the on-device reference)."""
    with load(bundle, device=device, backend="onnxruntime", precision="fp32", threads=threads) as ref:
        outputs, results = _run_frames(ref, frames)
    return outputs, [r.mask for r in results] if ref.task == "segmentation" else None


def _run_frames(pipe, frames: list) -> tuple[np.ndarray, list]:
    """Raw outputs and results for every frame, preprocessing and inferring each frame once."""
    outputs, results = [], []
    for frame in frames:
        prepared = pipe.prepare(frame)
        output = pipe.infer(prepared)
        outputs.append(output)
        results.append(pipe.finish(output, prepared))
    return np.concatenate(outputs), results


def history_rows(report: dict) -> list[dict]:
    rows = []
    for a in report["artifacts"]:
        if "latency" not in a:
            continue
        record = {k: a[k] for k in a if k not in ("engine",)}
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

    from edgemed.overlay import overlay

    img = Image.fromarray(overlay(frame, mask))
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()
