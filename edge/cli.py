"""The ``edgemed`` command line: convert, predict, bench, verify, demo.

Every failure a user can cause ends as one line on stderr and a non-zero exit status; the
JSON written by ``--json`` is the stable, documented interface for scripts.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
import numpy as np

from .errors import EdgemedError

EXIT_USER_ERROR = 2
EXIT_INTERNAL = 3


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
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
            click.echo("edgemed: interrupted; nothing half-written was kept", err=True)
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback on request
            if os.environ.get("EDGEMED_DEBUG"):
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            click.echo(f"edgemed: internal error: {type(exc).__name__}: {first}; "
                       "rerun with EDGEMED_DEBUG=1 for the traceback and report it", err=True)
            sys.exit(EXIT_INTERNAL)


@click.group(cls=_Group)
@click.version_option(package_name="edgemed")
def main() -> None:
    """edgemed: convert, verify, run and benchmark medical-imaging models on edge devices."""


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Bundle directory to write.")
@click.option("--task", required=True, type=click.Choice(["classification", "segmentation"]))
@click.option("--input-shape", help="NxCxHxW, e.g. 1x1x256x256 (optional for ONNX).")
@click.option("--arch", help="Zoo architecture for a state_dict checkpoint (cnn, unet).")
@click.option("--arch-args", help="JSON constructor arguments for --arch.")
@click.option("--allow-pickle", is_flag=True, help="Allow unpickling a whole nn.Module (runs its code).")
@click.option("--labels", help="Comma-separated class names.")
@click.option("--preprocess", help="Preprocessing spec: a JSON file (list of ops).")
@click.option("--to", default="onnx", show_default=True, help="Targets, comma-separated.")
@click.option("--precision", default="fp32", show_default=True, help="Precisions, comma-separated.")
@click.option("--calib", type=click.Path(path_type=Path), help="Folder of images or .npz for probes/calibration.")
@click.option("--calib-count", type=int, help="How many calibration images to use.")
@click.option("--calib-key", help="Array name inside a --calib .npz.")
@click.option("--calib-method", default="minmax", show_default=True, help="minmax, entropy or percentile.")
@click.option("--drift-budget", help='e.g. "dice>=0.995" (default: 99.9% agreement/Dice with FP32).')
@click.option("--static-shapes", is_flag=True, help="Fix the batch axis to 1 (OpenVINO NPU needs it).")
@click.option("--output-kind", default="logits", type=click.Choice(["logits", "probabilities"]))
@click.option("--name", help="Model name recorded in the bundle.")
@click.option("--force", is_flag=True, help="Replace an existing bundle.")
def convert(model: Path, out: Path, **kw) -> None:
    """Turn a trained model into a verified bundle."""
    from edgemed.converters.convert import convert as run_convert

    run_convert(model, out, log=lambda s: click.echo(s, err=True), **kw)
    click.echo(str(out))


def _inputs(paths: tuple[Path, ...]):
    from .images import read_frames

    for path in paths:
        frames = read_frames(path)
        for i, frame in enumerate(frames):
            yield (path.name if len(frames) == 1 else f"{path.name}#{i}"), frame


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--device", default="cpu", show_default=True)
@click.option("--backend")
@click.option("--precision")
@click.option("--threads", type=int)
@click.option("--out", type=click.Path(path_type=Path), help="Write masks and overlays here.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def predict(bundle: Path, inputs: tuple[Path, ...], device: str, backend: str | None, precision: str | None,
            threads: int | None, out: Path | None, as_json: bool) -> None:
    """Run the bundle on images (PNG, JPEG, TIFF, NPY, DICOM)."""
    from . import load
    from .overlay import write_segmentation

    with load(bundle, device=device, backend=backend, precision=precision, threads=threads) as pipe:
        for name, frame in _inputs(inputs):
            result = pipe.predict(frame)
            record = {"input": name, **result.to_json()}
            if out is not None and pipe.task == "segmentation":
                stem = name.replace("#", "_frame").rsplit(".", 1)[0]
                record["written"] = [str(p) for p in write_segmentation(out, stem, frame, result.mask)]
            if as_json:
                click.echo(json.dumps(record))
            elif pipe.task == "classification":
                probs = ", ".join(f"{k} {v:.3f}" for k, v in record["probabilities"].items())
                click.echo(f"{name}: {result.label} ({probs})")
            else:
                areas = ", ".join(f"{k} {v} px" for k, v in record["areas_px"].items())
                click.echo(f"{name}: mask {record['size'][0]}x{record['size'][1]}: {areas}")


def _bench_rows(report: dict) -> list[list]:
    lat, drift = report["latency"], report["drift"]
    art = report["artifact"]
    rows = []
    for key, label in (("end_to_end", "edgemed predict (end-to-end)"), ("infer", "edgemed engine.infer"),
                       ("raw_onnxruntime", "raw onnxruntime session.run")):
        if key in lat:
            s = lat[key]
            rows.append([report["model"], f"{art['backend']}/{art['precision']}", label,
                         f"{s['p50_ms']:.2f}", f"{s['p90_ms']:.2f}", f"{s['p99_ms']:.2f}", s["runs"]])
    task_fig = f"agreement {drift['agreement']:.3f}" if "agreement" in drift else f"dice {drift['dice']:.4f}"
    rows.append([report["model"], "drift vs FP32 reference", f"max|diff| {drift['max_abs_diff']:.2e}, {task_fig}",
                 "", "", "", drift["cases"]])
    return rows


BENCH_HEADERS = ["model", "artifact", "measure", "p50 ms", "p90 ms", "p99 ms", "runs"]


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--device", default="cpu", show_default=True)
@click.option("--backend")
@click.option("--precision")
@click.option("--threads", type=int)
@click.option("--data", type=click.Path(path_type=Path), help="Images to time on (default: the bundle's probes).")
@click.option("--runs", default=300, show_default=True, type=click.IntRange(10, 1_000_000))
@click.option("--warmup", default=20, show_default=True, type=click.IntRange(0, 10_000))
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the full report as JSON.")
def bench(bundle: Path, device: str, backend: str | None, precision: str | None, threads: int | None,
          data: Path | None, runs: int, warmup: int, json_out: Path | None) -> None:
    """Measure latency (end-to-end, engine, raw backend) and drift against the FP32 reference."""
    from edgemed.benchmarks.harness import bench_bundle

    from . import load
    from .table import format_table

    with load(bundle, device=device, backend=backend, precision=precision, threads=threads) as pipe:
        images = _bench_images(pipe, data)
        report = bench_bundle(pipe, images, runs=runs, warmup=warmup)
    click.echo(format_table(BENCH_HEADERS, _bench_rows(report)))
    if json_out is not None:
        _write_json(json_out, report)


def _bench_images(pipe, data: Path | None) -> list[np.ndarray]:
    from .datasets import ImageSet

    if data is not None:
        return [image for _, image in ImageSet.open(data).subset(64)]
    # The bundle's probes are stored preprocessed; timing needs raw frames, so default to the
    # real sample frames shipped for the task (the pipeline preprocesses them as it would live).
    from .samples import samples_for_task

    return [image for _, image in ImageSet.open(samples_for_task(pipe.task))]


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--device", default="cpu", show_default=True)
def verify(bundle: Path, device: str) -> None:
    """Check hashes and on-device parity of every passed artifact against reference.npz."""
    from edgemed.benchmarks.harness import bench_drift

    from . import load
    from .bundle import Bundle

    b = Bundle.open(bundle)
    failures = 0
    for art in b.artifacts:
        if not art.get("drift", {}).get("passed"):
            continue
        with load(bundle, device=device, backend=art["backend"], precision=art["precision"]) as pipe:
            figures = bench_drift(pipe)
        tol = art["drift"].get("parity_tolerance")
        ok = tol is None or figures["max_abs_diff"] <= max(tol, art["drift"]["max_abs_diff"] * 1.5 + 1e-6)
        failures += not ok
        click.echo(f"{art['file']} {art['backend']}/{art['precision']}: hashes ok, max|diff| vs reference "
                   f"{figures['max_abs_diff']:.2e} on this device: {'ok' if ok else 'MISMATCH'}")
    if failures:
        raise EdgemedError(f"{failures} artifact(s) disagree with the reference on this device",
                           "rebuild the bundle on this device or investigate the backend version")


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
    """Convert the shipped U-Net and classifier, predict on the shipped images, and bench both."""
    from .demo import run_demo

    run_demo(out, runs=runs, echo=click.echo)


if __name__ == "__main__":  # pragma: no cover
    main()
