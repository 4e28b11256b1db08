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
from .samples import SHIPPED_MODELS, samples_dir, samples_for_task, shipped_model
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


def run_demo(out: Path, runs: int = 300, echo: Callable[[str], None] = print) -> None:
    from edgemed.benchmarks.harness import bench_bundle
    from edgemed.converters.convert import convert

    from . import load
    from .cli import BENCH_HEADERS, _bench_rows

    out = Path(out)
    rows = []
    for name in SHIPPED_MODELS:
        weights, card = shipped_model(name)
        bundle = out / name
        echo(f"converting {name} ({card['task']}, trained: {_training_line(card)})")
        convert(weights, bundle, task=card["task"], input_shape="x".join(map(str, card["input_shape"])),
                arch=card["arch"], arch_args=card["arch_args"], labels=card["labels"],
                preprocess=card["preprocess"], calib=samples_for_task(card["task"]), name=name, force=True,
                log=lambda s: echo(f"  {s}"))
        with load(bundle, device="cpu") as pipe:
            _score(pipe, card["task"], out, echo)
            images = [image for _, image in ImageSet.open(samples_for_task(card["task"]))]
            rows += _bench_rows(bench_bundle(pipe, images, runs=runs))
    echo("")
    echo(format_table(BENCH_HEADERS, rows))


def _training_line(card: dict) -> str:
    t = card.get("training", {})
    if "test_dice" in t:
        return f"test Dice {t['test_dice']}"
    if "test_accuracy" in t:
        return f"test accuracy {t['test_accuracy']}"
    return "no record"
