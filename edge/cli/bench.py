"""``edgemed bench``: latency, drift and accuracy per artifact and scenario, here or on a device over ssh."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import EdgemedError
from ..input_kinds import DEFAULT_INPUT_KIND, input_kind
from .base import write_json
from .bench_tables import BENCH_HEADERS, artifact_name, bench_row, ensemble_table, record_line
from .options import accept_option, backend_option, precision_option


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--device", default="cpu", show_default=True)
@backend_option()
@precision_option()
@click.option("--all", "all_artifacts", is_flag=True, help="Every artifact of the bundle, side by side.")
@click.option("--scenario", type=click.Choice(["point-of-care", "remote"]))
@click.option("--data", type=click.Path(path_type=Path),
              help="Images (folder or .npz), all of them; default: the bundle's held-out verdict images.")
@click.option("--data-key", help="Array name inside a --data .npz (default: images).")
@click.option("--limit", type=click.IntRange(1), help="Use only this many images, evenly spaced (said in the table).")
@click.option("--record", type=click.Path(path_type=Path),
              help="Signal bundles: a whole recording (WFDB .hea, DICOM waveform, CSV) through the beat stream: "
                   "real-time factor, compute per beat, and with a .atr file detection and classes vs annotations.")
@accept_option("Bench the named --backend/--precision artifact although its verdict is this.")
@click.option("--labels", type=click.Path(path_type=Path), help="CSV file,label, mask folder, or .npz.")
@click.option("--fps", default=30.0, show_default=True, type=click.FloatRange(0.1, 1000))
@click.option("--duration", default=10.0, show_default=True, type=click.FloatRange(0.1, 3600))
@click.option("--threads", type=click.IntRange(1, 256))
@click.option("--runs", default=300, show_default=True, type=click.IntRange(10, 1_000_000))
@click.option("--warmup", default=20, show_default=True, type=click.IntRange(0, 10_000))
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the full report as JSON.")
@click.option("--history", type=click.Path(path_type=Path), help="SQLite history store (default: user cache).")
@click.option("--no-history", is_flag=True, help="Do not record this run.")
@click.option("--host", help="Run on USER@HOST over ssh (extra ssh options: EDGEMED_SSH_ARGS).")
@click.option("--remote-edgemed", default="edgemed", show_default=True, help="The edgemed command on --host.")
def bench(bundle: Path, json_out: Path | None, history: Path | None, no_history: bool, host: str | None,
          remote_edgemed: str, **kw) -> None:
    """Latency (end-to-end, engine, raw backend), drift and accuracy per artifact, per scenario."""
    from edgemed.benchmarks.history import History
    from edgemed.benchmarks.run import history_rows, run_bench

    from ..table import format_table

    if host:
        from edgemed.benchmarks.remote_host import bench_on_host

        if kw.get("data") is not None or kw.get("labels") is not None or kw.get("record") is not None:
            raise EdgemedError("--data/--labels/--record with --host would name paths on this machine",
                               "copy the data to the device and run edgemed bench there")
        report = bench_on_host(host, bundle, forwarded(kw), remote_edgemed)
    else:
        report = run_bench(bundle, log=lambda s: click.echo(s, err=True), **kw)
    unit = input_kind(report.get("input_kind") or DEFAULT_INPUT_KIND).unit
    click.echo(f"data: {report['data']['from']}: {report['data']['images']} {unit}"
               + ("" if report["data"]["labels"] else " (unlabelled: no accuracy vs ground truth)"))
    if "ensemble" in report:  # an ensemble: its configurations side by side, not artifacts
        click.echo(ensemble_table(report))
    else:
        click.echo(format_table(BENCH_HEADERS, [bench_row(report, a) for a in report["artifacts"]]))
    if "ensemble" not in report and any(not a.get("selectable", True) for a in report["artifacts"]):
        click.echo("not selectable: measured for comparison only; load, predict, auto and serve never use such an "
                   "artifact unless it is named with --accept")
    for a in report["artifacts"]:
        if "skipped" in a:
            click.echo(f"{a['backend']}/{a['precision']}: {a['skipped']}")
    for a in report["artifacts"]:
        if "point_of_care" in a:
            p = a["point_of_care"]
            stages = ", ".join(f"{k} {v:.1f}" for k, v in p["stage_p50_ms"].items())
            click.echo(f"point-of-care {artifact_name(a)}: {p['delivered']}/{p['frames']} frames "
                       f"delivered at {p['achieved_fps']:.1f} fps (target {p['fps_target']:g}), "
                       f"{p['deadline_misses']} deadline misses (> {p['deadline_ms']:.1f} ms capture to delivery), "
                       f"{p['dropped']} frames dropped, {p['results_dropped']} results dropped, latency p50 "
                       f"{p['latency']['p50_ms']:.1f} / p99 {p['latency']['p99_ms']:.1f} ms; stage p50 ms: {stages} "
                       f"(sum {p['stage_p50_sum_ms']:.1f})")
        if "explanation_cost" in a:  # --explain bundles: predict with and without the explanation, side by side
            c = a["explanation_cost"]
            ms = c["p50_ms"]
            click.echo(f"explanation {a['backend']}/{a['precision']}: predict p50 {ms['without explanation']:.3f} ms "
                       f"without, {ms['with explanation']:.3f} ms with ({c['with / without']:.2f}x), "
                       f"{ms['with the map read']:.3f} ms with r.saliency read "
                       f"({c['with the map read / without']:.2f}x); one engine, {c['runs']} frames alternating")
        if "record" in a:
            click.echo(record_line(a))
            for warning in a["record"].get("warnings", []):
                click.echo(f"edgemed: warning: {a['record']['record']}: {warning}", err=True)
        if "remote" in a:
            r = a["remote"]
            energy = r["energy"]
            e = (f"{energy['joules_per_inference'] * 1e3:.2f} mJ/inference ({energy['source']})"
                 if "joules_per_inference" in energy else f"energy {energy['source']}")
            cold = (f"cold start {r['cold_start_s']:.2f} s, peak RSS {r['peak_rss_mb']:.0f} MB"
                    if r["cold_start_error"] is None else f"cold start failed ({r['cold_start_error']})")
            click.echo(f"remote {a['backend']}/{a['precision']}: {cold}, bundle {r['bundle_mb']:.1f} MB, 1-thread p50 "
                       f"{r['latency_1_thread']['p50_ms']:.2f} ms, {e}")
    if json_out is not None:
        write_json(json_out, report)
    if not no_history:
        store = History(history)
        store.append(history_rows(report))
        store.close()


def forwarded(kw: dict) -> list[str]:
    """The bench options as command-line words for the remote edgemed."""
    out = []
    for key, value in kw.items():
        flag = "--" + key.replace("_", "-")
        if key == "all_artifacts":
            out += ["--all"] if value else []
        elif value is not None and value is not False:
            out += [flag, str(value)]
    return out
