"""Train the two-input ECG beat classifier ecg_rr (beat window + RR intervals) on MIT-BIH DS1; judge it on DS2.

- Data: ../shared/data/mitbih/mitdb_beats_ds1ds2.npz; classes N/S/V/F (Q dropped). DS1 records train,
  four of them (train_ecg.py's VAL_RECORDS) held out to choose the epoch; DS2 (22 other patients,
  de Chazal 2004's inter-patient split) is scored once, on all of its N/S/V/F beats.
- Input 0 ``beat`` (N, 1, 180): the window of the other ECG models, through edgemed's beat ops with the
  spec in the card. Input 1 ``rr`` (N, 4) seconds: edgemed.zoo.ecg.rr_features from every annotated
  beat of the record (Q beats included: a runtime sees all R peaks). The first and last beat of each
  record have no rr_pre or rr_post, so they are left out of training and evaluation.
- Class-weighted cross-entropy (weights (count total / class count) ** --weight-power); amplitude
  and heart-rate augmentation. Seeded, CPU, one thread by default.

    python scripts/train_ecg_rr.py --data ../shared/data --out edge/assets
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgemed.hashing import sha256_file
from edgemed.signal_preprocess import apply_beat_ops
from edgemed.zoo import build
from edgemed.zoo.ecg import RR_FEATURES, rr_features

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import command  # noqa: E402
from train_ecg import CLASSES, SPEC, VAL_RECORDS  # noqa: E402
from weight_average import update_average  # noqa: E402


def load(path: Path) -> tuple[dict, dict, dict, dict]:
    """beats, rr, labels and records per part (train / val: held-out DS1 records / test: DS2)."""
    d = np.load(path)
    rr = rr_features(d["record"], d["r_peak"])  # from every beat, Q included, before anything is dropped
    keep = (d["y"] < 4) & np.isfinite(rr).all(axis=1)
    beats = apply_beat_ops(d["x"][keep][:, None, :] / 200.0, SPEC).astype(np.float32)  # counts -> mV, spec
    y, split, record, rr = d["y"][keep].astype(np.int64), d["split"][keep], d["record"][keep], rr[keep]
    val = np.isin(record, VAL_RECORDS)
    parts = {"train": (split == 0) & ~val, "val": (split == 0) & val, "test": split == 1}
    return ({k: beats[m] for k, m in parts.items()}, {k: rr[m] for k, m in parts.items()},
            {k: y[m] for k, m in parts.items()}, {k: record[m] for k, m in parts.items()})


SELECT_ON = (0, 1, 2)  # N, S, V: the held-out records hold 18 F beats, too few to choose an epoch by


def selection_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean F1 of N, S and V on the held-out DS1 records (every beat counted, F included)."""
    f1 = []
    for c in SELECT_ON:
        tp = ((pred == c) & (truth == c)).sum()
        denom = (pred == c).sum() + (truth == c).sum()
        f1.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f1))


def augment_beats(x: torch.Tensor, gen: torch.Generator, strength: float) -> torch.Tensor:
    """Beats as other patients and another R-peak detector would give them: amplitude x N(1, 0.2), the window
    shifted by up to 4 samples (33 ms: R-peak jitter) and stretched by up to 10% (QRS width and heart rate),
    a slow baseline drift of up to 0.1 mV and 0.02 mV of noise; ``strength`` scales all of it (0: none)."""
    if not strength:
        return x
    n, _, length = x.shape
    u = lambda *shape: 2 * torch.rand(*shape, generator=gen) - 1  # noqa: E731 - uniform in [-1, 1]
    stretch = 1 + 0.1 * strength * u(n, 1)
    shift = 4 * strength * u(n, 1) * 2 / length
    grid_x = torch.linspace(-1, 1, length).view(1, length) * stretch + shift
    grid = torch.stack([grid_x, torch.zeros_like(grid_x)], -1).view(n, 1, length, 2)
    x = F.grid_sample(x[:, :, None, :], grid, mode="bilinear", padding_mode="border", align_corners=True)[:, :, 0]
    t = torch.linspace(0, 1, length).view(1, 1, length)
    drift = 0.1 * strength * u(n, 1, 1) * torch.sin(2 * torch.pi * (0.3 * t * (1 + u(n, 1, 1)) + u(n, 1, 1)))
    noise = 0.02 * strength * torch.randn(x.shape, generator=gen)
    return x * (1 + 0.2 * strength * torch.randn(n, 1, 1, generator=gen)) + drift + noise


def predict(model: torch.nn.Module, beats: np.ndarray, rr: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(beats[i:i + 4096]), torch.from_numpy(rr[i:i + 4096]))
                               .argmax(1).numpy() for i in range(0, len(beats), 4096)])


def clopper_pearson(k: int, n: int) -> tuple[float | None, float | None]:
    """Two-sided 95% exact (Clopper-Pearson) interval of k/n (scipy)."""
    if n == 0:
        return None, None
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return round(float(ci.low), 4), round(float(ci.high), 4)


def per_class(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Sensitivity and positive predictive value per AAMI class, each with its counts and 95% interval."""
    out = {}
    for c, name in enumerate(CLASSES):
        tp, pos, called = int(((pred == c) & (truth == c)).sum()), int((truth == c).sum()), int((pred == c).sum())
        se_lo, se_hi = clopper_pearson(tp, pos)
        ppv_lo, ppv_hi = clopper_pearson(tp, called)
        out[name] = {"se": round(tp / pos, 4) if pos else None, "se_interval": [se_lo, se_hi],
                     "ppv": round(tp / called, 4) if called else None, "ppv_interval": [ppv_lo, ppv_hi],
                     "beats": pos, "called": called, "true_positives": tp}
    return out


def export_onnx(model: torch.nn.Module, path: Path, beats: np.ndarray, rr: np.ndarray) -> None:
    """Two named inputs (``beat``, ``rr``) and a dynamic batch axis, at the project's opset."""
    import warnings

    from edgemed.converters.export_onnx import OPSET

    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model.eval(), (torch.from_numpy(beats[:2]), torch.from_numpy(rr[:2])),
                                    dynamo=True, input_names=["beat", "rr"], output_names=["logits"],
                                    dynamic_shapes=({0: batch}, {0: batch}), opset_version=OPSET, verbose=False)
    path.write_bytes(program.model_proto.SerializeToString())


CALIBRATION = {0: 400, 1: 200, 2: 250, 3: 150}  # DS1 beats per class, as edgemed's shipped ecg_ds1.npz
VERDICT_N = 3000  # DS2 N beats beside every S, V and F beat, as edgemed's shipped verdict set ds2_beats.npz


def stratified(y: np.ndarray, want: dict[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), min(n, int((y == c).sum())), replace=False)
                                   for c, n in want.items()]))


def int8_check(model: torch.nn.Module, beats: dict, rr: dict, y: dict, seed: int) -> tuple[dict, np.ndarray]:
    """Quantize the model as edgemed's ONNX Runtime INT8 path does (static QDQ, per-channel int8 weights, uint8
    activations, min-max calibration, the same op types) on 1,000 stratified DS1 training beats, and compare it
    with FP32 on DS2: per FP32 class, the share of its calls INT8 keeps, with the one-sided 95% lower bound the
    gate judges (edgemed's default signal budget: class_agreement >= 0.99), on a set made like edgemed's
    verdict set (every S, V, F beat and 3,000 N) and on all of DS2. Returns the record and FP32 ONNX's calls."""
    import tempfile

    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgemed.converters.ort_quantize import OP_TYPES
    from edgemed.measures.stats import clopper_pearson as one_sided

    calib = stratified(y["train"], CALIBRATION, seed)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(calib)

        def get_next(self):
            i = next(self.rows, None)
            return None if i is None else {"beat": beats["train"][i:i + 1], "rr": rr["train"][i:i + 1]}

    with tempfile.TemporaryDirectory() as tmp:
        fp32, prepared, int8 = (Path(tmp) / n for n in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        export_onnx(model, fp32, beats["train"][calib], rr["train"][calib])
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(int8), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=OP_TYPES,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        preds = {}
        for name, file in (("fp32", fp32), ("int8", int8)):
            session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
            preds[name] = np.concatenate([
                session.run(None, {"beat": beats["test"][i:i + 4096], "rr": rr["test"][i:i + 4096]})[0].argmax(1)
                for i in range(0, len(y["test"]), 4096)])
    verdict_set = stratified(y["test"], {0: VERDICT_N, 1: len(y["test"]), 2: len(y["test"]), 3: len(y["test"])}, seed)

    def agreement(rows: np.ndarray) -> dict:
        out = {}
        for k, c in enumerate(CLASSES):
            called = rows[preds["fp32"][rows] == k]
            kept = int((preds["int8"][called] == k).sum())
            if len(called):
                out[c] = {"kept": round(kept / len(called), 4), "low": round(one_sided(kept, len(called))[0], 4),
                          "fp32_calls": len(called)}
        return out

    record = {"how": "ONNX Runtime static QDQ INT8 (per-channel int8 weights, uint8 activations, min-max, edgemed's "
                     "op types), calibrated on 1,000 DS1 training beats (N 400, S 200, V 250, F 150)",
              "class_agreement_verdict_set": agreement(verdict_set),
              "class_agreement_all_ds2": agreement(np.arange(len(y["test"]))),
              "agreement_metric": "per FP32 class, the share of FP32's calls INT8 keeps; low: one-sided 95% "
                                  "Clopper-Pearson bound (what edgemed's gate compares with its budget, 0.99)",
              "verdict_set": f"every DS2 S, V and F beat and {VERDICT_N} DS2 N beats (seeded), as edgemed's "
                             "ds2_beats.npz",
              "int8_test_all_ds2": {c: {"se": v["se"], "ppv": v["ppv"]}
                                    for c, v in per_class(preds["int8"], y["test"]).items()}}
    return record, preds["fp32"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("edge/assets"))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--weight-power", type=float, default=0.5)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--beat-scale", type=int, default=0, help="1: the model divides each beat by its std")
    ap.add_argument("--ema", type=float, default=0.999, help="decay of the weight average per step (0: none)")
    ap.add_argument("--augment", type=float, default=1.0, help="strength of the beat augmentation (0: none)")
    ap.add_argument("--pause-aug", type=float, default=0.2,
                    help="share of N and S training beats whose rr_post is lengthened up to 3x")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    path = args.data / "mitbih" / "mitdb_beats_ds1ds2.npz"
    beats, rr, y, records = load(path)

    arch_args = {"in_channels": 1, "num_classes": 4, "width": args.width, "rr_hidden": 16, "hidden": 32,
                 "beat_scale": bool(args.beat_scale)}
    model = build("ecg_rr", **arch_args)
    average = copy.deepcopy(model) if args.ema else model
    counts = np.bincount(y["train"], minlength=4)
    weight = torch.tensor((counts.sum() / counts) ** args.weight_power, dtype=torch.float32)
    weight /= weight.mean()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    batch = 256
    steps = args.epochs * ((len(y["train"]) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    xt, rt, yt = torch.from_numpy(beats["train"]), torch.from_numpy(rr["train"]), torch.from_numpy(y["train"])
    best, best_epoch, best_state, curve = -1.0, 0, None, []
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(yt))
        for i in range(0, len(order), batch):
            idx = torch.from_numpy(order[i:i + batch])
            n = len(idx)
            # heart rate differs between patients and hours; intervals carry a few ms of R-peak jitter
            xb = augment_beats(xt[idx], gen, args.augment)
            rb = rt[idx] * torch.exp(0.15 * torch.randn(n, 1, generator=gen)) * (
                1 + 0.02 * torch.randn(n, 4, generator=gen))
            # a long pause after a beat says little about where the beat began: sinus pauses follow normal and
            # supraventricular beats too (an atrial premature beat can suppress the sinus node), so DS1's rule
            # "premature, then a long pause: ventricular" must not be learned as is
            pause = (torch.rand(n, generator=gen) < args.pause_aug) & ((yt[idx] == 0) | (yt[idx] == 1))
            rb[:, 1] = torch.where(pause, rb[:, 1] * 3.0 ** torch.rand(n, generator=gen), rb[:, 1])
            loss = F.cross_entropy(model(xb, rb), yt[idx], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if args.ema:
                update_average(average, model, args.ema)
        pred = predict(average, beats["val"], rr["val"])
        score = selection_f1(pred, y["val"])
        curve.append(round(score, 4))
        se = {c: round(float((pred[y["val"] == k] == k).mean()), 3) for k, c in enumerate(CLASSES)
              if (y["val"] == k).any()}
        print(f"ecg_rr epoch {epoch + 1}: loss {loss.item():.3f} val F1(N,S,V) {score:.4f} se {se} "
              f"({time.time() - t0:.0f} s)", flush=True)
        if score > best:
            best, best_epoch, best_state = score, epoch + 1, copy.deepcopy(average.state_dict())
    average.load_state_dict(best_state)
    pred = predict(average, beats["test"], rr["test"])
    test = per_class(pred, y["test"])
    int8, onnx_pred = int8_check(average, beats, rr, y, args.seed)
    int8["fp32_onnx_agrees_with_pytorch"] = round(float((onnx_pred == pred).mean()), 5)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(average.state_dict(), args.out / "ecg_rr.pt")
    n = {k: len(v) for k, v in y.items()}
    card = {
        "name": "ecg_rr", "task": "classification", "input_kind": "signal", "arch": "ecg_rr", "arch_args": arch_args,
        "input_shape": [1, 1, 180],
        "inputs": [
            {"name": "beat", "shape": [1, 1, 180], "dtype": "float32", "units": "mV",
             "meaning": "lead MLII, resampled to 120 Hz, 0.75 s before to 0.75 s after the R peak, detrended "
                        "(the preprocess spec below, as the other ECG models)"},
            {"name": "rr", "shape": [1, 4], "dtype": "float32", "units": "s", "features": list(RR_FEATURES),
             "meaning": "[rr_pre, rr_post, rr_local, rr_average] from the record's R peaks "
                        "(edgemed.zoo.ecg.rr_features): rr_pre = previous R peak to this one; rr_post = this "
                        "one to the next; rr_local = mean of the (up to) 10 RR intervals ending at this beat "
                        "(rr_pre included); rr_average = mean of the RR intervals lying wholly in the (up to) "
                        "300 s before this beat (at least rr_pre). Raw seconds: the model normalises them "
                        "(log ratios to rr_average) in its graph. Undefined for a record's first and last beat."},
        ],
        "labels": CLASSES, "preprocess": SPEC,
        "training": {
            "data": "MIT-BIH Arrhythmia Database v1.0.0, lead MLII beats (mitdb_beats_ds1ds2.npz)",
            "data_sha256": sha256_file(path),
            "split": f"DS1 train ({n['train']} beats; records {list(VAL_RECORDS)} held out to choose the epoch, "
                     f"{n['val']} beats) / DS2 test ({n['test']} beats: every N, S, V, F beat of the 22 DS2 "
                     "records, other patients: de Chazal 2004 inter-patient split)",
            "excluded": "Q beats (too rare to learn); the first and last beat of every record (no rr_pre or "
                        "rr_post), in training and evaluation alike",
            "class_counts": {part: {c: int((y[part] == k).sum()) for k, c in enumerate(CLASSES)} for part in y},
            "class_weights": [round(float(w), 4) for w in weight],
            "augmentation": f"beats (strength {args.augment:g}): amplitude x N(1, 0.2), shift up to 4 samples, "
                            "stretch up to 10%, baseline drift up to 0.1 mV, noise 0.02 mV; RR x lognormal(0.15) "
                            "per beat (heart rate) and x N(1, 0.02) per interval; "
                            f"rr_post of {args.pause_aug:.0%} of N and S beats x up to 3 (pauses after "
                            "non-ventricular beats)",
            "epochs": args.epochs, "best_epoch": best_epoch, "seed": args.seed, "threads": args.threads,
            "val_f1_nsv": round(best, 4), "val_curve": curve,
            "metric": "DS2 per-class sensitivity (se) and positive predictive value (ppv), AAMI EC57 classes; "
                      "intervals: two-sided 95% Clopper-Pearson (scipy)",
            "reference": "de Chazal et al. 2004 (linear discriminants with RR features, same split): S se 0.76, "
                         "V se 0.78",
            "test": test,
            "int8_check": int8,
            "command": command("scripts/train_ecg_rr.py"),
            "seconds": round(time.time() - t0, 1), "script": "scripts/train_ecg_rr.py",
        },
    }
    (args.out / "ecg_rr.json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps({c: (v["se"], v["ppv"]) for c, v in test.items()}), json.dumps(int8))


if __name__ == "__main__":
    main()
