"""The ``edgemed`` command line: convert, predict, bench, verify, demo.

Every failure a user can cause ends as one line on stderr and a non-zero exit status; the
JSON written by ``--json`` is the stable, documented interface for scripts.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import click

from .cli_options import accept_option, backend_option, precision_option
from .errors import EdgemedError, first_line

EXIT_USER_ERROR = 2
EXIT_INTERNAL = 3


_INTERRUPTED = []


def _on_signal(signum, frame):  # noqa: ARG001 - signal handler signature
    # SIGTERM (timeout, CI cancellation, container stop) unwinds like Ctrl-C, so every temporary
    # directory and half-written bundle is removed on the way out. Remember the signal: raised inside
    # an extension module's import, KeyboardInterrupt can surface as "ImportError: initialization
    # failed", which must still read as an interrupt.
    _INTERRUPTED.append(signum)
    raise KeyboardInterrupt


def _interrupted() -> None:
    signum = _INTERRUPTED[-1] if _INTERRUPTED else signal.SIGINT
    click.echo(f"edgemed: interrupted ({signal.Signals(signum).name}); nothing half-written was kept", err=True)
    sys.exit(128 + signum)


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
        try:
            return super().invoke(ctx)
        except EdgemedError as exc:
            click.echo(f"edgemed: error: {exc}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except BrokenPipeError:
            # The reader (e.g. `| head`) went away: not an error of ours, and nothing more to say.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except KeyboardInterrupt:
            _interrupted()
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback on request
            if _INTERRUPTED:
                _interrupted()
            if os.environ.get("EDGEMED_DEBUG"):
                raise
            click.echo(f"edgemed: internal error: {type(exc).__name__}: {first_line(exc)}; "
                       "rerun with EDGEMED_DEBUG=1 for the traceback and report it", err=True)
            sys.exit(EXIT_INTERNAL)


@click.group(cls=_Group)
@click.version_option(package_name="edgemed")
def main() -> None:
    """edgemed: convert, verify, run and benchmark medical-imaging models on edge devices."""


def _convert_options(command):
    from edgemed.converters.options import click_options

    return click_options(command)


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Bundle directory to write.")
@_convert_options
def convert(model: Path, out: Path, task: str, **kw) -> None:
    """Turn a trained model into a verified bundle."""
    from edgemed.converters.convert import run
    from edgemed.converters.options import ConvertOptions

    run(ConvertOptions.from_cli(model, out, task, **kw), log=lambda s: click.echo(s, err=True))
    click.echo(str(out))


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--device", default="cpu", show_default=True)
@backend_option()
@precision_option()
@click.option("--threads", type=int)
@click.option("--out", type=click.Path(path_type=Path),
              help="Write each frame's result here: STEM.json, and for masks STEM_mask.png and STEM_overlay.png.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@accept_option("Run the named --backend/--precision artifact although its verdict is this.")
@click.option("--dicom", "dicom_kinds", help="With --out and DICOM inputs: the DICOM results to write, any of "
              "seg,sr,sc,saliency (default: every one that applies; saliency: the explanation of a bundle "
              "converted with --explain, a secondary capture labelled as such), or none.")
@click.option("--server", help="A Triton server (edgemed serve) URL, e.g. http://127.0.0.1:8000: BUNDLE is then the "
              "served model's name and the frames go there (KServe v2).")
@click.option("--fs", type=click.FloatRange(1, 100_000), help="Signal bundles, .npy recordings: the sampling rate "
              "in Hz (files that state their rate keep their own).")
@click.option("--units", help="Signal bundles, .npy recordings: the samples' unit (mV, uV, V).")
@click.option("--leads", help="Signal bundles, .npy recordings: the lead names, comma-separated (e.g. MLII,V1).")
def predict(bundle: Path, inputs: tuple[Path, ...], device: str, backend: str | None, precision: str | None,
            threads: int | None, out: Path | None, as_json: bool, accept: str | None, server: str | None,
            dicom_kinds: str | None, fs: float | None, units: str | None, leads: str | None) -> None:
    """Run the bundle on images (PNG, JPEG, TIFF, NPY, DICOM; a folder: every image in it). Every frame of a
    multi-frame file is a result of its own; with --out, each frame's files are named uniquely. Signal
    bundles take recordings (WFDB .hea, DICOM waveform, CSV) and classify every beat."""
    from . import load
    from .inputs import expand, unique_stems

    kinds = _dicom_kinds(dicom_kinds, out, server)
    if server is not None:
        from .triton_client import RemotePipeline

        opened = RemotePipeline(server, str(bundle))
        click.echo(f"edgemed: serving: {opened.reason}", err=True)
    else:
        opened = load(bundle, device=device, backend=backend, precision=precision, threads=threads, accept=accept)
    with opened as pipe:
        if accept:
            click.echo(f"edgemed: warning: {pipe.reason}", err=True)
        if "seg" in kinds and dicom_kinds is not None and pipe.task != "segmentation":
            from .errors import OptionError

            raise OptionError(f"--dicom {dicom_kinds}: a SEG holds masks, and {pipe.bundle.name} is a {pipe.task} "
                              "model", "use --dicom sr,sc (its findings go into the SR and the overlay capture)")
        if "saliency" in kinds and dicom_kinds is not None and getattr(pipe, "explainer", None) is None:
            from .errors import OptionError

            raise OptionError(f"--dicom {dicom_kinds}: {pipe.bundle.name} makes no explanation (it was converted "
                              "without --explain)", "leave saliency out of --dicom, or convert with --explain cam")
        signal = pipe.input_kind == "signal"
        described = {"fs": fs, "units": units, "leads": tuple(x.strip() for x in leads.split(",")) if leads else None}
        if not signal and any(v is not None for v in described.values()):
            from .errors import OptionError

            raise OptionError(f"--fs/--units/--leads describe signals, and {pipe.bundle.name} reads images",
                              "drop them for image bundles")
        files = expand(inputs, signals=signal)
        stems = unique_stems(files)
        written, failed, internal = 0, [], False
        for path in files:  # one file that cannot be analysed never stops the others
            try:
                if signal:
                    _predict_signal(pipe, path, out, as_json, described)
                else:
                    written += _predict_file(pipe, path, stems[path], out, as_json, kinds, dicom_kinds is not None)
            except KeyboardInterrupt:
                raise
            except EdgemedError as exc:
                if len(files) == 1:
                    raise  # one input: its one line, as for any error
                failed.append(path)
                click.echo(f"edgemed: error: {exc}", err=True)
            except Exception as exc:  # noqa: BLE001 - a bug on one file: said, and the batch goes on
                if os.environ.get("EDGEMED_DEBUG"):
                    raise
                failed.append(path)
                internal = True
                click.echo(f"edgemed: internal error on {path}: {type(exc).__name__}: {first_line(exc)}; rerun with "
                           "EDGEMED_DEBUG=1 for the traceback and report it", err=True)
        if out is not None and not as_json and not signal:
            click.echo(f"{written} files written to {out}", err=True)
        if failed:
            click.echo(f"edgemed: {len(failed)} of {len(files)} input file(s) not analysed (said above); every other "
                       "file's results are complete", err=True)
            sys.exit(EXIT_INTERNAL if internal else EXIT_USER_ERROR)


def _predict_file(pipe, path: Path, stem: str, out: Path | None, as_json: bool, kinds: tuple[str, ...],
                  strict: bool) -> int:
    """One image file (every frame of it): print, write, and for DICOM write its SEG/SR/SC. Returns files written."""
    from .images import is_dicom
    from .inputs import file_frames
    from .tasks import task_named
    from .writers import write_result

    task = task_named(pipe.task)  # a local, remote or ensemble pipeline: the task says how to print its result
    written = 0
    frames = file_frames(path, stem)  # a result object is refused here, before any inference
    results = []
    for frame in frames:
        result = pipe.predict(frame.image)
        results.append(result)
        record = {"input": frame.name, **result.to_json()}
        if out is not None:
            record["written"] = [str(p) for p in write_result(out, frame, result, record)]
            written += len(record["written"])
        if as_json:
            click.echo(json.dumps(record))
        else:
            click.echo(f"{frame.name}: {task.summary(record)}")
    if kinds and is_dicom(path):
        from .dicom_results import write_objects

        objects = write_objects(pipe, path, [f.image for f in frames], results, out / stem, kinds, strict=strict,
                                note=lambda s: click.echo(f"edgemed: note: {s}", err=True))
        written += len(objects)
        if not as_json:
            click.echo(f"{path.name}: DICOM {', '.join(p.name for p in objects) or '(none applies)'}", err=True)
    return written


def _dicom_kinds(text: str | None, out: Path | None, server: str | None) -> tuple[str, ...]:
    """Which DICOM results predict writes: needs --out; not through --server (the algorithm record is local)."""
    from .dicom_results import KINDS
    from .errors import OptionError

    if text is None:
        return KINDS if out is not None and server is None else ()
    kinds = tuple(k.strip().lower() for k in text.split(",") if k.strip())
    if kinds == ("none",):
        return ()
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise OptionError(f"--dicom {text!r}: unknown kind(s) {', '.join(bad) or '(none)'}",
                          "use seg,sr,sc,saliency or none")
    if out is None:
        raise OptionError("--dicom needs --out", "pass --out DIR for the DICOM objects")
    if server is not None:
        raise OptionError("--dicom with --server is not supported", "run predict on the bundle here for DICOM results")
    return kinds


def _predict_signal(pipe, path: Path, out: Path | None, as_json: bool, described: dict) -> None:
    """Signal bundles: every beat of one recording (WFDB .hea, DICOM waveform, CSV), one line per record or one
    JSON object per beat; with --out, STEM.beats.json holds its beats, gaps and warnings."""
    from .atomic import write_atomic

    record = pipe.beats(path, **described)
    beats = [{"input": str(path), **b.to_json()} for b in record.beats]
    if as_json:
        for b in beats:
            click.echo(json.dumps(b))
    else:
        counts = ", ".join(f"{k} {v}" for k, v in record.counts().items())
        click.echo(f"{path}: {len(beats)} beats in {record.duration_s:.0f} s ({counts}); {len(record.gaps)} gap(s)"
                   f" with no usable signal; {record.realtime_factor:.0f}x real time")
    for warning in record.warnings:  # on stderr in either form: a script reading --json sees it too
        click.echo(f"edgemed: warning: {path}: {warning}", err=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        target = out / f"{Path(path).stem}.beats.json"
        write_atomic(target, json.dumps({"input": str(path), "duration_s": record.duration_s, "beats": beats,
                                         "gaps": [vars(g) for g in record.gaps], "warnings": record.warnings},
                                        indent=1) + "\n")
        if not as_json:
            click.echo(f"written: {target}", err=True)


@main.command()
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

    from .table import format_table

    if host:
        from edgemed.benchmarks.remote_host import bench_on_host

        if kw.get("data") is not None or kw.get("labels") is not None or kw.get("record") is not None:
            raise EdgemedError("--data/--labels/--record with --host would name paths on this machine",
                               "copy the data to the device and run edgemed bench there")
        report = bench_on_host(host, bundle, _forwarded(kw), remote_edgemed)
    else:
        report = run_bench(bundle, log=lambda s: click.echo(s, err=True), **kw)
    unit = "beat windows" if report.get("input_kind") == "signal" else "images"
    click.echo(f"data: {report['data']['from']}: {report['data']['images']} {unit}"
               + ("" if report["data"]["labels"] else " (unlabelled: no accuracy vs ground truth)"))
    if "ensemble" in report:  # an ensemble: its configurations side by side, not artifacts
        click.echo(_ensemble_table(report))
    else:
        click.echo(format_table(BENCH_HEADERS, [_bench_row(report, a) for a in report["artifacts"]]))
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
            click.echo(f"point-of-care {_artifact_name(a)}: {p['delivered']}/{p['frames']} frames "
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
            click.echo(_record_line(a))
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
        _write_json(json_out, report)
    if not no_history:
        store = History(history)
        store.append(history_rows(report))
        store.close()


def _record_line(a: dict) -> str:
    r = a["record"]
    line = (f"record {a['backend']}/{a['precision']}: {r['beats']} beats in {r['duration_s']:.0f} s of signal, "
            f"{r['realtime_factor']:.0f}x real time, {r['compute_per_beat_ms']:.3f} ms compute per beat, each beat "
            f"reported within {r['report_delay_bound_s']:g} s + compute; {len(r['gaps'])} gap(s)")
    vs = r.get("against_annotations")
    if vs and vs.get("annotated_beats"):
        det = vs["detected"]
        classes = ", ".join(f"{k} Se {v['sensitivity']['value']:.3f} (n={v['sensitivity']['cases']})"
                            for k, v in vs["per_class"].items() if v["sensitivity"]["cases"])
        line += (f"; vs annotations: {det['value']:.4f} of {det['cases']} beats detected (>= {det['low']:.4f}); "
                 f"{classes}")
    return line


def _forwarded(kw: dict) -> list[str]:
    """The bench options as command-line words for the remote edgemed."""
    out = []
    for key, value in kw.items():
        flag = "--" + key.replace("_", "-")
        if key == "all_artifacts":
            out += ["--all"] if value else []
        elif value is not None and value is not False:
            out += [flag, str(value)]
    return out


def _artifact_name(a: dict) -> str:
    """backend/precision, or for an ensemble's configuration its name (members may differ in backend)."""
    if a.get("configuration") == "member":
        return f"member {a['file'].rsplit('/', 1)[0]} ({a['backend']}/{a['precision']})"
    return a.get("configuration") or f"{a['backend']}/{a['precision']}"


ENSEMBLE_HEADERS = ["configuration", "runs/frame", "e2e p50", "e2e p99", "cost", "vs ground truth",
                    "vs best member, paired (95% interval)"]


def _ensemble_table(report: dict) -> str:
    """The ensemble, each member alone and the ensemble without flips, timed side by side; paired with the best
    member on the same cases where there are labels."""
    from .table import format_table

    e = report["ensemble"]
    rows = []
    for a in report["artifacts"]:
        lat = a["latency"]["end_to_end"]
        vs = a.get("vs_best_member")
        paired = "" if vs is None else (f"{vs['gain']:+.4f} [{vs['low']:+.4f}, {vs['high']:+.4f}] n={vs['cases']}"
                                        + (f", McNemar p={vs['p_mcnemar']:.3f}" if "p_mcnemar" in vs else ""))
        rows.append([_artifact_name(a) + ("" if a.get("selectable", True) else " (comparison only)"),
                     a["runs_per_frame"], f"{lat['p50_ms']:.3f}", f"{lat['p99_ms']:.3f}", f"x{a['cost_vs_member']:.2f}",
                     _truth(a.get("accuracy")), paired])
    gate = e.get("combination_gate")
    lines = [f"ensemble: {len(e['members'])} member(s), combined by {e['combine']}, flips: "
             f"{', '.join(e['tta']) or 'none'}; combination gate: "
             + (f"{gate['verdict']} ({', '.join(gate['served'])} on {gate['device']})" if gate else "none"),
             format_table(ENSEMBLE_HEADERS, rows)]
    drift = report["artifacts"][0].get("drift_on_data")
    if drift is not None:
        import msgspec

        from .gate import summary
        from .manifest import DriftRecord

        lines.append(f"combination on the bench data against the FP32 combination: "
                     f"{summary(msgspec.convert(drift, DriftRecord))}")
    lines.append(f"cost: p50 over {e['cost_reference']}'s"
                 + (" (the best member on these labels)" if e.get("best_member") else " (no labels: the first member)")
                 + f"; {report['artifacts'][0]['latency']['method']}")
    return "\n".join(lines)


BENCH_HEADERS = ["artifact", "MB", "gate", "e2e p50", "e2e p90", "e2e p99", "infer p50", "raw ORT p50",
                 "drift on data", "vs ground truth"]


def _bench_row(report: dict, a: dict) -> list:
    import msgspec

    from .gate import summary
    from .manifest import DriftRecord

    head = [f"{a['backend']}/{a['precision']}", f"{a['bytes'] / 1e6:.2f}",
            a["verdict"] if a.get("selectable", True) else f"{a['verdict']}, not selectable"]
    if "latency" not in a:
        return head + ["-"] * 7
    e2e, inf = a["latency"]["end_to_end"], a["latency"]["infer"]
    raw = a["latency"].get("raw_onnxruntime", {}).get("p50_ms")
    drift = summary(msgspec.convert(a["drift_on_data"], DriftRecord))
    return head + [f"{e2e['p50_ms']:.2f}", f"{e2e['p90_ms']:.2f}", f"{e2e['p99_ms']:.2f}", f"{inf['p50_ms']:.2f}",
                   f"{raw:.2f}" if raw else "-", drift, _truth(a.get("accuracy"))]


def _interval(i: dict) -> str:
    return f"{i['value']:.3f} [{i['low']:.3f}, {i['high']:.3f}] n={i['cases']}"


def _truth(acc: dict | None) -> str:
    """Accuracy or Dice vs ground truth, each with its 95% bounds and case count."""
    if acc is None:
        return "- (no labels)"
    if "accuracy" in acc:
        return f"acc {_interval(acc['accuracy_interval'])}"
    if "sensitivity" in acc:  # a detector
        fppi = acc["false_positives_per_image"]["value"]
        text = f"lesion sensitivity {_interval(acc['sensitivity'])}, {fppi:.2f} FP/image"
        m = acc.get("map50_interval")
        return text + (f", mAP@0.5 {_interval(m)}" if m else f", mAP@0.5 {acc['map50']:.3f} n={acc['images']}")
    return ", ".join(f"{k} dice {_interval(v['dice_interval'])}" for k, v in acc["per_class"].items())


def _write_json(path: Path, data: dict) -> None:
    from .atomic import write_atomic

    write_atomic(path, json.dumps(data, indent=2) + "\n")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--device", default="cpu", show_default=True)
@click.option("--pubkey", type=click.Path(path_type=Path), help="Also require a valid Ed25519 signature by this key.")
@click.option("--certifier", "certifiers", multiple=True, type=click.Path(path_type=Path),
              help="Also trust certifications signed by this public key (repeatable).")
def verify(bundle: Path, device: str, pubkey: Path | None, certifiers: tuple[Path, ...]) -> None:
    """Check signature (with --pubkey), hashes, which verdict is trusted and who signed it, and that every passed
    artifact reproduces on this device the answers it gave at conversion on the bundle's reference probes."""
    from .bundle import Bundle
    from .device_pointer import is_device, serving_bundle
    from .ensemble.files import is_ensemble
    from .gate import summary
    from .pipeline import open_pipeline
    from .verify import verify_artifact

    if is_device(bundle):  # a device folder (edgemed update --into): the version it serves
        bundle = serving_bundle(bundle)
    if pubkey is not None:
        from .signing import verify_signature

        click.echo(f"signature ok: signed by key {verify_signature(bundle, pubkey)}; no file added, removed or changed")
    if is_ensemble(bundle):  # every member, as a bundle of its own (the signature above covers them all)
        from .ensemble.opening import open_ensemble

        members = open_ensemble(bundle, require_signature=pubkey, certifiers=certifiers).members
        click.echo(f"ensemble: {len(members)} member(s), every member file matches its hash")
    else:
        members = [Bundle.open(bundle, require_signature=pubkey, certifiers=certifiers)]
    failures = 0
    for b in members:
        where = f"{b.path.name}/" if is_ensemble(bundle) else ""
        for note in b.certification_notes:
            click.echo(f"certification {where}{note}")
        for art in b.artifacts:
            if art.verdict != "passed":
                click.echo(f"{where}{art.file} {art.key}: {art.verdict} ({_trusted_verdict(art)}); not checked "
                           "(never selected)")
                continue
            with open_pipeline(b, device=device, backend=art.backend, precision=art.precision) as pipe:
                checked = verify_artifact(pipe)
            failures += not checked.passed
            click.echo(f"{where}{art.file} {art.key}: hashes ok; on this device: {summary(checked)}")
            click.echo(f"  verdict passed, {_trusted_verdict(art)}")
    if failures:
        raise EdgemedError(f"{failures} artifact(s) do not reproduce their conversion-time answers on this device",
                           "rebuild the bundle on this device or investigate the backend version")


def _trusted_verdict(art) -> str:
    """Which verdict holds for an artifact, and on what: conversion's, or a certification (who signed it)."""
    where = art.drift.evaluated_on or "conversion"
    if "certification" in where:
        return f"from {where}"
    return f"from conversion ({art.drift.cases} cases, budget {art.drift.budget})"


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--eval", "data", required=True, type=click.Path(path_type=Path),
              help="The site's images (folder or .npz) or signal windows (.npz), unlabelled: every case counts.")
@click.option("--eval-key", "data_key", help="Array name inside an --eval .npz.")
@click.option("--val", type=click.Path(path_type=Path), help="Labelled images: the clinical gate against FP32.")
@click.option("--val-labels", type=click.Path(path_type=Path), help="Labels for --val (CSV, mask folder, .npz).")
@click.option("--val-key", help="Array name inside a --val .npz.")
@click.option("--drift-budget", "budget", help="The budget to judge by (default: each artifact's conversion budget; "
              "FP32 artifacts: parity, else the task's default).")
@click.option("--margin", default=0.005, show_default=True, type=click.FloatRange(0, 0.5, min_open=True, max_open=True),
              help="Non-inferiority margin of the clinical gate.")
@click.option("--device", default="cpu", show_default=True, help="Where the artifacts run (and are judged).")
@click.option("--threads", type=click.IntRange(1, 256))
@click.option("--key", type=click.Path(path_type=Path), help="Sign the certification with this Ed25519 private key.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write the record as JSON here.")
def certify(bundle: Path, json_out: Path | None, **kw) -> None:
    """Judge every artifact again on a site's own data, where it runs, without rebuilding: an uncertified artifact
    becomes passed or failed. The verdict is a new record in BUNDLE/certifications/ (signed with --key); no
    artifact is touched."""
    from .certify import certify as run_certify

    path, record = run_certify(bundle, log=lambda s: click.echo(s, err=True), **kw)
    from .gate import summary

    for a in record.artifacts:
        click.echo(f"{a.file} {a.backend}/{a.precision}: {a.verdict}: {summary(a.drift)}")
        for name, est in a.drift.metrics.items():
            if name.startswith("class_agreement["):
                low = f" (95% lower bound {est.low:.4f})" if est.low is not None else ""
                click.echo(f"  {name} {est.value:.4f}{low} on {est.cases} {record.data.unit}")
    signed = f", signed by key {record.signature.key_fingerprint}" if record.signature else ", unsigned"
    click.echo(f"certification written: {path}{signed}")
    if json_out is not None:
        _write_json(json_out, json.loads(record.to_json()))


@main.command()
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Private key file to create.")
def keygen(out: Path) -> None:
    """Create an Ed25519 key pair (OUT, mode 0600, and OUT.pub) for signing bundles."""
    from .signing_keys import generate_keypair

    if out.exists():
        raise EdgemedError(f"{out} already exists", "choose another path; edgemed never overwrites a key")
    click.echo(str(generate_keypair(out)))


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--key", required=True, type=click.Path(path_type=Path), help="Ed25519 private key (PEM).")
def sign(bundle: Path, key: Path) -> None:
    """Sign every file of a verified bundle (writes edgemed.sig)."""
    from .signing import sign_bundle

    click.echo(str(sign_bundle(bundle, key)))


@main.command()
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
        from .atomic import write_atomic

        write_atomic(html_out, html_report(runs, found))
        click.echo(f"HTML report: {html_out}")
    if found and fail_on_regression:
        click.echo(f"edgemed: {len(found)} regression(s) against the stored baselines", err=True)
        sys.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True)
def devices(as_json: bool) -> None:
    """Show the detected machine and the known device profiles."""
    from edgemed.devices.detect import detect, match_profile
    from edgemed.devices.profiles import load_profiles
    from edgemed.runtimes import available_backends

    from .table import format_table

    machine, profiles = detect(), load_profiles()
    chosen = match_profile(machine, profiles)
    if as_json:
        click.echo(json.dumps({"machine": machine.to_json(), "profile": chosen, "backends": available_backends(),
                               "profiles": profiles}, indent=2))
        return
    m = machine.to_json()
    click.echo(f"machine: {m['cpu_model']} ({m['arch']}, {m['cores']} logical cores)")
    click.echo(f"  ISA: {', '.join(m['isa']) or 'none detected'}; INT8 dot-product units: "
               f"{'yes' if m['int8_dot_product'] else 'no'}")
    click.echo(f"  NVIDIA GPU: {m['nvidia_gpu'] or 'none'}; Jetson: {m['jetson_model'] or 'no'}"
               + (f" (L4T {m['l4t_release']})" if m["l4t_release"] else ""))
    click.echo(f"  OpenVINO devices: {', '.join(m['openvino_devices']) or 'none'}; backends installed: "
               + ", ".join(k for k, v in available_backends().items() if v))
    click.echo(f"  matching profile: {chosen}\n")
    rows = [[("* " if n == chosen else "  ") + n, p["description"],
             " > ".join("/".join(x) for x in p["preference"][:3]), p["latency_budget_ms"]["point-of-care"]]
            for n, p in sorted(profiles.items())]
    click.echo(format_table(["profile", "description", "preference", "PoC budget ms"], rows))


@main.command()
@click.option("--out", default="edgemed-demo", show_default=True, type=click.Path(path_type=Path))
@click.option("--runs", default=300, show_default=True, type=click.IntRange(10, 100_000))
def demo(out: Path, runs: int) -> None:
    """Convert the four shipped models (BUSI U-Net, BreastMNIST classifier, BUSI lesion detector, MIT-BIH ECG LSTM),
    predict on the shipped ultrasound images and ECG record, and bench them in one table."""
    from .demo import run_demo

    run_demo(out, runs=runs, echo=click.echo)


from .cli_serving import register  # noqa: E402 - serve and export live in their own module

register(main)
from .fleet.cli import register as register_fleet  # noqa: E402 - publish, update, rollback, sbom, repo

register_fleet(main)
from .ensemble.cli import ensemble  # noqa: E402 - the ensemble command lives with the ensemble package

main.add_command(ensemble)

if __name__ == "__main__":  # pragma: no cover
    main()
