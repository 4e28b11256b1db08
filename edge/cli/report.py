"""``edgemed report``: trends and regressions over the bench history (a release gate with --fail-on-regression)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.option("--history", type=click.Path(path_type=Path), help="SQLite history store (default: user cache).")
@click.option("--html", "html_out", type=click.Path(path_type=Path), help="Write a self-contained HTML report.")
@click.option("--threshold", default=0.10, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Latency regression threshold: a fraction above 0 (0.10 = 10% slower than the baseline).")
@click.option("--fail-on-regression", is_flag=True, help="Exit 1 when a regression is found (release gate).")
def report(history: Path | None, html_out: Path | None, threshold: float, fail_on_regression: bool) -> None:
    """Trends and regressions against the stored baselines."""
    from edgemed.benchmarks.history import History
    from edgemed.benchmarks.report import html_report, regressions, text_report

    store = History(history, create=False)
    runs = store.runs()
    store.close()
    found = regressions(runs, threshold)
    click.echo(text_report(runs, found))
    if html_out is not None:
        from ..atomic import write_atomic

        write_atomic(html_out, html_report(runs, found))
        click.echo(f"HTML report: {html_out}")
    if found and fail_on_regression:
        click.echo(f"edgemed: {len(found)} regression(s) against the stored baselines", err=True)
        sys.exit(1)
