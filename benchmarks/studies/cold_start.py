"""Cold start: a whole process that imports edgemed, loads a bundle and predicts once, against the bare engine.

What an embedding application pays before its first answer: interpreter start, imports, opening
the model, one inference. Each side runs as its own process under ``/usr/bin/time -v`` (wall
clock and peak memory from the kernel's accounting); the "bare" side is the script a user writes
with onnxruntime, numpy and Pillow for the same bundle: the same ONNX file, the same
preprocessing spec written out in numpy, the same answer (checked: both print their label). The
two alternate, in rotating order, so that a shared machine's drift falls on both alike; the
figures are medians over the rounds, and the ratio is formed per round.

    python benchmarks/studies/cold_start.py --image BUNDLE --signal BUNDLE [--rounds 9]
    python benchmarks/studies/cold_start.py --build DIR     # converts the shipped models into DIR first

The signal side predicts one pre-cut beat at the model's own rate (``fs`` equal to the spec's
resample rate), the path that must not pull in scipy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgemed.manifest import Manifest

TIME = "/usr/bin/time"
_ELAPSED = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)")
_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")

EDGEMED_IMAGE = """
import edgemed
pipe = edgemed.load({bundle!r})
print(pipe.predict({frame!r}).label)
"""

EDGEMED_SIGNAL = """
import numpy as np

from edgemed.manifest import Manifest
import edgemed
pipe = edgemed.load({bundle!r})
print(pipe.predict(np.load({beat!r}), fs={fs!r}, units="mV", leads=({lead!r},)).label)
"""

BARE_IMAGE = """
import numpy as np

from edgemed.manifest import Manifest
import onnxruntime as ort
from PIL import Image
session = ort.InferenceSession({model!r}, providers=["CPUExecutionProvider"])
img = Image.open({frame!r})
img = img.convert({mode!r}).resize(({w}, {h}), Image.Resampling.BILINEAR)
x = (np.asarray(img, np.float32) * np.float32({scale!r}) - np.float32({mean!r})) / np.float32({std!r})
x = x[None, None] if x.ndim == 2 else x.transpose(2, 0, 1)[None]
z = session.run(None, {{{name!r}: np.ascontiguousarray(x)}})[0][0]
print({labels!r}[int(np.argmax(z))])
"""

BARE_SIGNAL = """
import numpy as np

from edgemed.manifest import Manifest
import onnxruntime as ort
session = ort.InferenceSession({model!r}, providers=["CPUExecutionProvider"])
x = np.load({beat!r}).astype(np.float64)
t = np.arange(len(x)) - (len(x) - 1) / 2.0
x = x - x.mean() - t * (t @ x) / (t @ t)  # linear detrend
z = session.run(None, {{{name!r}: x.astype(np.float32)[None, None]}})[0][0]
print({labels!r}[int(np.argmax(z))])
"""


def _manifest(bundle: Path) -> Manifest:
    return Manifest.from_json((bundle / "edgemed.json").read_bytes(), str(bundle))


def _onnx_file(bundle: Path, manifest: Manifest) -> str:
    for art in manifest.artifacts:
        if art.backend == "onnxruntime" and art.precision == "fp32":
            return str(bundle / art.file)
    raise SystemExit(f"{bundle}: no FP32 ONNX Runtime artifact to compare against")


def image_scripts(bundle: Path, frame: Path) -> tuple[str, str]:
    """(edgemed, bare) scripts for a classifier whose spec is gray/rgb, bilinear resize, scale, normalize."""
    m = _manifest(bundle)
    ops = {op["op"]: op for op in m.preprocess}
    known = {"to_gray", "to_rgb", "resize", "scale", "normalize"}
    if len(m.output.shape) != 2 or set(ops) - known or ops["resize"].get("interpolation") != "bilinear":
        raise SystemExit(f"{bundle}: the bare script covers one (N, classes) output after {sorted(known)} "
                         "(bilinear) only")
    h, w = ops["resize"]["size"]
    norm = ops.get("normalize", {"mean": [0.0], "std": [1.0]})
    if len(set(norm["mean"])) != 1 or len(set(norm["std"])) != 1:
        raise SystemExit(f"{bundle}: the bare script covers one mean and std for every channel only")
    bare = BARE_IMAGE.format(model=_onnx_file(bundle, m), frame=str(frame), mode="L" if "to_gray" in ops else "RGB",
                             w=w, h=h, scale=ops.get("scale", {"factor": 1.0})["factor"], mean=norm["mean"][0],
                             std=norm["std"][0], name=m.input.name, labels=list(m.model.labels))
    return EDGEMED_IMAGE.format(bundle=str(bundle), frame=str(frame)), bare


def signal_scripts(bundle: Path, beat: Path) -> tuple[str, str]:
    """(edgemed, bare) scripts for a beat classifier whose spec is select one lead, resample, window, detrend."""
    m = _manifest(bundle)
    ops = [op["op"] for op in m.preprocess]
    if ops != ["select_leads", "resample", "window", "detrend"]:
        raise SystemExit(f"{bundle}: the bare script covers select_leads, resample, window, detrend only, not {ops}")
    fs = m.preprocess[1]["fs"]
    lead = m.preprocess[0]["leads"][0]
    bare = BARE_SIGNAL.format(model=_onnx_file(bundle, m), beat=str(beat), name=m.input.name,
                              labels=list(m.model.labels))
    return EDGEMED_SIGNAL.format(bundle=str(bundle), beat=str(beat), fs=fs, lead=lead), bare


def run_once(script: str) -> tuple[float, float, float, str]:
    """(wall s by /usr/bin/time, wall s by this process's clock, peak RSS MiB, the label printed)."""
    # An installed package has its bytecode compiled; a checkout run with PYTHONDONTWRITEBYTECODE=1 (as CI and this
    # machine set it) compiled edgemed's ~40 modules from source in every process (about 20 ms of 0.28 s).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    t0 = time.perf_counter()
    done = subprocess.run([TIME, "-v", sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"the script failed:\n{done.stderr[-2000:]}")
    e, r = _ELAPSED.search(done.stderr), _RSS.search(done.stderr)
    elapsed = int(e.group(1) or 0) * 3600 + int(e.group(2)) * 60 + float(e.group(3))
    return elapsed, wall, int(r.group(1)) / 1024, done.stdout.strip()


def compare(name: str, scripts: tuple[str, str], rounds: int) -> dict:
    """Alternating rounds of the two processes (order reversed every round); medians and the per-round ratio."""
    edgemed_script, bare_script = scripts
    runs: dict[str, list[tuple[float, float, float, str]]] = {"edgemed": [], "bare": []}
    run_once(edgemed_script), run_once(bare_script)  # warm the page cache for both
    for r in range(rounds):
        order = ["edgemed", "bare"] if r % 2 == 0 else ["bare", "edgemed"]
        for side in order:
            runs[side].append(run_once(edgemed_script if side == "edgemed" else bare_script))
    labels = {side: {x[3] for x in v} for side, v in runs.items()}
    if labels["edgemed"] != labels["bare"] or len(labels["edgemed"]) != 1:
        raise SystemExit(f"{name}: edgemed answered {labels['edgemed']}, the bare script {labels['bare']}")
    med = {side: np.median(np.array([x[:3] for x in v]), axis=0) for side, v in runs.items()}
    ratio = np.array([x[1] for x in runs["edgemed"]]) / np.array([x[1] for x in runs["bare"]])
    return {"case": name, "rounds": rounds, "label": labels["edgemed"].pop(),
            "edgemed_s": float(med["edgemed"][1]), "bare_s": float(med["bare"][1]),
            "ratio": float(np.median(ratio)), "ratio_iqr": [float(x) for x in np.percentile(ratio, [25, 75])],
            "edgemed_time_s": float(med["edgemed"][0]), "bare_time_s": float(med["bare"][0]),
            "edgemed_rss_mib": float(med["edgemed"][2]), "bare_rss_mib": float(med["bare"][2])}


def build(out: Path) -> tuple[Path, Path]:
    """The shipped breast-ultrasound classifier and 1-D CNN beat classifier as FP32 ONNX Runtime bundles."""
    from edgemed.converters.convert import convert
    from edgemed.samples import assets_dir, calibration_set, samples_dir, shipped_model
    from edgemed.signal_sets import SignalSet

    out.mkdir(parents=True, exist_ok=True)
    image, signal = out / "cnn_breastmnist", out / "ecg_cnn"
    if not image.exists():
        weights, card = shipped_model("cnn_breastmnist")
        convert(weights, image, task=card["task"], input_shape=tuple(card["input_shape"]), arch=card["arch"],
                arch_args=card["arch_args"], labels=tuple(card["labels"]), preprocess=tuple(card["preprocess"]),
                calib=samples_dir("breastmnist"), name="cnn_breastmnist", targets=("onnx",), precisions=("fp32",))
    if not signal.exists():
        card = json.loads((assets_dir() / "ecg_cnn.json").read_text())
        beats = out / "ecg_cnn_calibration.npz"
        SignalSet.open(calibration_set(card["task"], card["input_kind"])).save(beats, 48)
        convert(assets_dir() / "ecg_cnn.pt", signal, task=card["task"], input_kind=card["input_kind"],
                input_shape=tuple(card["input_shape"]), arch=card["arch"], arch_args=card["arch_args"],
                labels=tuple(card["labels"]), preprocess=tuple(card["preprocess"]), calib=beats,
                targets=("onnx",), precisions=("fp32",))
    return image, signal


def inputs(where: Path) -> tuple[Path, Path]:
    """A real BreastMNIST test frame (PNG) and a real MIT-BIH DS2 beat (.npy, mV at 120 Hz) from the shipped samples."""
    from PIL import Image

    from edgemed.samples import samples_dir

    frame = sorted(p for p in samples_dir("breastmnist").iterdir() if p.suffix == ".png")[0]
    shutil.copy(frame, where / "frame.png")
    with np.load(samples_dir("ecg") / "ds2_beats.npz") as d:
        np.save(where / "beat.npy", d["signals"][0].astype(np.float64) / float(d["adc_gain"]))
    Image.open(where / "frame.png").verify()
    return where / "frame.png", where / "beat.npy"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, help="an image classification bundle with an FP32 ONNX artifact")
    ap.add_argument("--signal", type=Path, help="an ECG beat classification bundle with an FP32 ONNX artifact")
    ap.add_argument("--build", type=Path, help="convert the shipped models into this folder and use them")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()
    if not Path(TIME).is_file():
        raise SystemExit(f"{TIME} not found: install GNU time (apt-get install time)")
    if args.build:
        args.image, args.signal = build(args.build)
    if not (args.image or args.signal):
        ap.error("give --image and/or --signal bundles, or --build DIR")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        frame, beat = inputs(Path(tmp))
        cases = ([("image", image_scripts(args.image.resolve(), frame))] if args.image else []) + \
                ([("signal", signal_scripts(args.signal.resolve(), beat))] if args.signal else [])
        for name, scripts in cases:
            res = compare(name, scripts, args.rounds)
            results.append(res)
            print(f"{name}: edgemed {res['edgemed_s']:.3f} s, bare {res['bare_s']:.3f} s, ratio {res['ratio']:.2f} "
                  f"(IQR {res['ratio_iqr'][0]:.2f}-{res['ratio_iqr'][1]:.2f}, {res['rounds']} rounds); "
                  f"/usr/bin/time {res['edgemed_time_s']:.2f} vs {res['bare_time_s']:.2f} s; peak RSS "
                  f"{res['edgemed_rss_mib']:.0f} vs {res['bare_rss_mib']:.0f} MiB; both answered {res['label']}",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
