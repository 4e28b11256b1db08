"""``edgemed demo``: the first thing a user runs (the work is in :mod:`edgemed.demo`)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--out", default="edgemed-demo", show_default=True, type=click.Path(path_type=Path))
@click.option("--runs", default=300, show_default=True, type=click.IntRange(10, 100_000))
def demo(out: Path, runs: int) -> None:
    """Convert the four shipped models (BUSI U-Net, BreastMNIST classifier, BUSI lesion detector, MIT-BIH ECG LSTM),
    predict on the shipped ultrasound images and ECG record, and bench them in one table."""
    from ..demo import run_demo

    run_demo(out, runs=runs, echo=click.echo)
