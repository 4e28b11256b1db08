"""``edgemed demo``: the main job on the embedded default, end to end, on a fresh machine.

Converts the two shipped models (BUSI lesion U-Net, BreastMNIST classifier) into bundles,
predicts on the shipped real images (writing overlays, scoring against the shipped masks and
labels), and benchmarks both bundles, printing one table.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .datasets import ImageSet
from .images import read_image
from .metrics import dice
from .samples import SHIPPED_MODELS, calibration_set, samples_dir, samples_for_task, shipped_model
from .table import format_table


def _score(pipe, task: str, out: Path, echo: Callable[[str], None]) -> None:
    from .overlay import write_segmentation

    images = ImageSet.open(samples_for_task(task))
    if task == "segmentation":
        scores = []
        for name, image in images:
            result = pipe.predict(image)
            truth = (read_image(samples_dir("busi_masks") / name) > 0).astype(np.uint8)
            scores.append(dice(result.mask, truth, 1))
            write_segmentation(out / "predictions", Path(name).stem, image, result.mask)
        echo(f"  {len(scores)} ultrasound frames: lesion Dice vs ground truth mean {np.mean(scores):.3f}; "
             f"overlays in {out / 'predictions'}")
        return
    with open(samples_dir("breastmnist") / "labels.csv") as f:
        truth = {row["file"]: row["label"] for row in csv.DictReader(f)}
    hits = sum(pipe.predict(image).label == truth[name] for name, image in images)
    echo(f"  {len(images)} BreastMNIST images: {hits}/{len(images)} match their labels")


DEMO_HEADERS = ["model", "artifact", "MB", "drift vs FP32", "verdict", "e2e p50 ms", "e2e p99 ms", "infer p50 ms",
                "raw ORT p50 ms"]


def run_demo(out: Path, runs: int = 300, echo: Callable[[str], None] = print) -> None:
    from edgemed.benchmarks.harness import bench_latency
    from edgemed.converters.convert import convert

    from . import load
    from .bundle import Bundle
    from .gate import summary

    out = Path(out)
    rows = []
    for name in SHIPPED_MODELS:
        weights, card = shipped_model(name)
        bundle = out / name
        echo(f"converting {name} ({card['task']}, trained: {_training_line(card)})")
        convert(weights, bundle, task=card["task"], input_shape=tuple(card["input_shape"]), arch=card["arch"],
                arch_args=card["arch_args"], labels=tuple(card["labels"]), preprocess=tuple(card["preprocess"]),
                calib=calibration_set(card["task"]), targets=("onnx", "openvino"), precisions=("fp32", "fp16", "int8"),
                name=name, force=True, log=lambda s: echo(f"  {s}"))
        images = [image for _, image in ImageSet.open(samples_for_task(card["task"]))]
        with load(bundle, device="cpu") as pipe:
            _score(pipe, card["task"], out, echo)
        b = Bundle.open(bundle)
        for dropped in b.report().get("dropped", []):
            echo(f"  not kept: {dropped['artifact']}: {dropped['reason']}")
        for art in b.artifacts:
            row = [name, art.key, f"{art.size_bytes / 1e6:.2f}", summary(art.drift).split(" -> ")[0], art.verdict]
            if art.verdict != "passed":
                rows.append(row + ["-", "-", "-", "-"])
                continue
            with load(bundle, backend=art.backend, precision=art.precision) as pipe:
                lat = bench_latency(pipe, images, runs=runs)
            raw = lat.get("raw_onnxruntime", {}).get("p50_ms")
            rows.append(row + [f"{lat['end_to_end']['p50_ms']:.2f}", f"{lat['end_to_end']['p99_ms']:.2f}",
                               f"{lat['infer']['p50_ms']:.2f}", f"{raw:.2f}" if raw else "-"])
    echo("")
    echo(format_table(DEMO_HEADERS, rows))
    echo("(latencies measured side by side in this run; drift on held-out real images vs the PyTorch model, each\n"
         " figure with its 95% lower bound and case count: an artifact passes only when the bound meets the budget,\n"
         " and uncertified ones are never selected; they would need more held-out images, see edgemed.json)")


def _training_line(card: dict) -> str:
    t = card.get("training", {})
    if "test_dice" in t:
        return f"test Dice {t['test_dice']}"
    if "test_accuracy" in t:
        return f"test accuracy {t['test_accuracy']}"
    return "no record"
