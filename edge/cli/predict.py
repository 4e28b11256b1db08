"""``edgemed predict``: a bundle (or a served model) on image files, DICOM or whole signal recordings."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..errors import EdgemedError, first_line
from .base import EXIT_INTERNAL, EXIT_USER_ERROR
from .options import accept_option, backend_option, precision_option


@click.command()
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
    from .. import load
    from ..input_kinds import input_kind
    from ..io.inputs import expand, unique_stems
    from ..tasks import task_named

    kinds = _dicom_kinds(dicom_kinds, out, server)
    if server is not None:
        from ..serve.triton_client import RemotePipeline

        opened = RemotePipeline(server, str(bundle))
        click.echo(f"edgemed: serving: {opened.reason}", err=True)
    else:
        opened = load(bundle, device=device, backend=backend, precision=precision, threads=threads, accept=accept)
    with opened as pipe:
        if accept:
            click.echo(f"edgemed: warning: {pipe.reason}", err=True)
        signal = input_kind(pipe.input_kind).recordings  # recordings in, every beat out
        if signal and dicom_kinds is not None and set(kinds) - {"sr"}:
            from ..errors import OptionError

            raise OptionError(f"--dicom {dicom_kinds}: {pipe.bundle.name} classifies beats, which go into an SR "
                              "pointing into the waveform", "use --dicom sr (or none)")
        if "seg" in kinds and dicom_kinds is not None and not task_named(pipe.task).spatial:
            from ..errors import OptionError

            raise OptionError(f"--dicom {dicom_kinds}: a SEG holds masks, and {pipe.bundle.name} is a {pipe.task} "
                              "model", "use --dicom sr,sc (its findings go into the SR and the overlay capture)")
        if "saliency" in kinds and dicom_kinds is not None and getattr(pipe, "explainer", None) is None:
            from ..errors import OptionError

            raise OptionError(f"--dicom {dicom_kinds}: {pipe.bundle.name} makes no explanation (it was converted "
                              "without --explain)", "leave saliency out of --dicom, or convert with --explain cam")
        described = {"fs": fs, "units": units, "leads": tuple(x.strip() for x in leads.split(",")) if leads else None}
        _check_described(Path(bundle).name, signal, described, server)
        files = expand(inputs, signals=signal)
        stems = unique_stems(files)
        written, failed, internal = 0, [], False
        for path in files:  # one file that cannot be analysed never stops the others
            try:
                if signal:
                    written += _predict_signal(pipe, path, out, as_json, described, "sr" in kinds)
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
        if out is not None and not as_json:
            click.echo(f"{written} files written to {out}", err=True)
        if failed:
            click.echo(f"edgemed: {len(failed)} of {len(files)} input file(s) not analysed (said above); every other "
                       "file's results are complete", err=True)
            sys.exit(EXIT_INTERNAL if internal else EXIT_USER_ERROR)


def _check_described(name: str, signal: bool, described: dict, server: str | None) -> None:
    """A recording's description goes with a signal bundle run here: a served one takes pre-cut beats only."""
    from ..errors import OptionError

    if signal and server is not None:
        raise OptionError(f"predict --server reads images; {name} on {server} classifies pre-cut beats (a "
                          "recording's beats are found in process)", "run predict on the bundle here, or send "
                          "beats with edgemed.serve.triton_client.RemotePipeline(...).predict(beat, fs=...)")
    if not signal and any(v is not None for v in described.values()):
        raise OptionError(f"--fs/--units/--leads describe signals, and {name} reads images",
                          "drop them for image bundles")


def _predict_file(pipe, path: Path, stem: str, out: Path | None, as_json: bool, kinds: tuple[str, ...],
                  strict: bool) -> int:
    """One image file (every frame of it): print, write, and for DICOM write its SEG/SR/SC. Returns files written."""
    from ..io.images import is_dicom
    from ..io.inputs import file_frames
    from ..io.writers import write_result
    from ..tasks import task_named

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
        from ..pacs.results import write_objects

        objects = write_objects(pipe, path, [f.image for f in frames], results, out / stem, kinds, strict=strict,
                                note=lambda s: click.echo(f"edgemed: note: {s}", err=True))
        written += len(objects)
        if not as_json:
            click.echo(f"{path.name}: DICOM {', '.join(p.name for p in objects) or '(none applies)'}", err=True)
    return written


def _dicom_kinds(text: str | None, out: Path | None, server: str | None) -> tuple[str, ...]:
    """Which DICOM results predict writes: needs --out; not through --server (the algorithm record is local)."""
    from ..errors import OptionError
    from ..pacs.results import KINDS

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


def _predict_signal(pipe, path: Path, out: Path | None, as_json: bool, described: dict, sr: bool) -> int:
    """Signal bundles: every beat of one recording (WFDB .hea, DICOM waveform, CSV), one line per record or one
    JSON object per beat; with --out, STEM.beats.json holds its beats, gaps and warnings, and a DICOM waveform's
    beats also go into STEM.sr.dcm (``sr``) in its study. Returns files written."""
    from ..atomic import write_atomic
    from ..io.images import is_dicom

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
    if out is None:
        return 0
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{Path(path).stem}.beats.json"
    write_atomic(target, json.dumps({"input": str(path), "duration_s": record.duration_s, "beats": beats,
                                     "gaps": [vars(g) for g in record.gaps], "warnings": record.warnings},
                                    indent=1) + "\n")
    written = [target]
    if sr and is_dicom(path):
        from ..pacs.beat_report import write_beat_sr

        written.append(write_beat_sr(pipe, path, record, out / Path(path).stem))
    if not as_json:
        click.echo(f"written: {', '.join(str(p) for p in written)}", err=True)
    return len(written)
