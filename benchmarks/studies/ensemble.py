"""What an ensemble and test-time flips cost and buy on this machine, measured side by side.

Builds FP32 ONNX Runtime bundles of the members, ensembles of them at each TTA setting, and
- times ``predict`` of every member alone and of every ensemble in the same run, in blocks whose order is permuted
  each round (the machine is shared: ratios from one run, never figures from two);
- with labels, scores every configuration on the same test cases and compares each ensemble with the best single
  member, paired: accuracy (exact bounds on the paired difference from the discordant cases, exact McNemar test)
  or per-case lesion Dice (bootstrap bounds on the mean paired difference), both from :mod:`edgemed.measures.stats`
  (one-sided 95% bounds, i.e. a two-sided 90% interval).

    python benchmarks/studies/ensemble.py --model cnn_breastmnist  # shipped CNN + seed-1 CNN, BreastMNIST test (156)
    python benchmarks/studies/ensemble.py --model unet_busi        # shipped U-Net, + hflip, + hflip,vflip, BUSI test
    python benchmarks/studies/ensemble.py --model unet_busi --member-weights OTHER_UNET.pt  # a second trained U-Net
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import edgemed
from edgemed.benchmarks.side_by_side import BLOCK, paired_gain, permuted_latency
from edgemed.ensemble import make_ensemble
from edgemed.samples import calibration_set, shipped_model
from edgemed.tasks import Task, task_named

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
SEED1_CNN = ROOT / "tests" / "fixtures" / "ensemble" / "cnn_breastmnist_seed1.pt"


def _bundle(weights: Path, name: str, out: Path, shipped: str) -> Path:
    from edgemed.converters.convert import convert

    _, card = shipped_model(shipped)
    return convert(weights, out / name, task=card["task"], input_shape=tuple(card["input_shape"]), arch=card["arch"],
                   arch_args=card["arch_args"], labels=tuple(card["labels"]), preprocess=tuple(card["preprocess"]),
                   calib=calibration_set(card["task"]), name=name)


def _breastmnist_test() -> tuple[np.ndarray, np.ndarray]:
    with np.load(DATA / "breastmnist.npz") as d:
        return d["test_images"], d["test_labels"].reshape(-1)


def _busi_test() -> tuple[np.ndarray, np.ndarray]:
    with np.load(DATA / "busi_256.npz") as d:
        test = d["split"] == "test"
        return d["images"][test], (d["masks"][test] > 0).astype(np.uint8)


# The shipped models this study ensembles: the test cases each is scored on (../shared/data) and the further members
# trained for it (none shipped for the U-Net: pass --member-weights).
TEST_CASES = {"cnn_breastmnist": _breastmnist_test, "unet_busi": _busi_test}
FURTHER_MEMBERS = {"cnn_breastmnist": [SEED1_CNN], "unet_busi": []}


def _scores(pipe, images: np.ndarray, truth: np.ndarray, task: Task) -> np.ndarray:
    """Per case: 1/0 correct (classification) or lesion Dice (segmentation), as the task scores a case."""
    return task.truth_per_case(list(truth), [pipe.predict(image) for image in images], pipe.labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(TEST_CASES), default="cnn_breastmnist",
                    help="The shipped model whose ensembles are measured (its task follows from its card)")
    ap.add_argument("--member-weights", type=Path, nargs="*", default=None,
                    help="Further trained weights of the shipped architecture (default: the seed-1 CNN for "
                         "cnn_breastmnist, none for unet_busi)")
    ap.add_argument("--tta", default=",hflip,hflip+vflip", help="TTA settings to compare, comma-separated "
                    "('' none, '+' joins flips)")
    ap.add_argument("--combine", default="mean-logits")
    ap.add_argument("--calls", type=int, default=200, help="Timed predict calls per configuration.")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    shipped = args.model
    extra = args.member_weights if args.member_weights is not None else FURTHER_MEMBERS[shipped]
    task = task_named(shipped_model(shipped)[1]["task"])
    images, truth = TEST_CASES[shipped]()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights, _ = shipped_model(shipped)
        bundles = [_bundle(weights, f"{shipped}_shipped", tmp, shipped)] + [
            _bundle(w, f"{shipped}_{i + 1}", tmp, shipped) for i, w in enumerate(extra)]
        pipes = {f"member {b.name}": edgemed.load(b, backend="onnxruntime", precision="fp32") for b in bundles}
        for setting in args.tta.split(","):
            flips = [f for f in setting.split("+") if f]
            if len(bundles) == 1 and not flips:
                continue  # one member without flips is the member itself
            out = make_ensemble(bundles, tmp / f"ens_{setting or 'none'}", combine=args.combine, tta=flips)
            pipes[f"ensemble x{len(bundles)} tta={setting or 'none'}"] = edgemed.load(
                out, backend="onnxruntime", precision="fp32")
        scores = {name: _scores(p, images, truth, task) for name, p in pipes.items()}
        p50 = {k: float(np.median(v)) * 1e3 for k, v in permuted_latency(pipes, images, args.calls).items()}
        for p in pipes.values():
            p.close()
    members = [k for k in scores if k.startswith("member")]
    best = max(members, key=lambda k: scores[k].mean())
    figure = "accuracy" if task.binary_case_scores else "mean Dice"
    rows = {}
    print(f"{task.name}: {len(images)} test cases, {figure}; predict p50 on this machine, {args.calls} calls each, "
          f"permuted blocks of {BLOCK}; best member: {best}")
    for name in pipes:
        row = {"score": float(scores[name].mean()), "p50_ms": p50[name], "cost_vs_best": p50[name] / p50[best]}
        line = f"  {name:34s} {figure} {row['score']:.4f}  p50 {row['p50_ms']:7.3f} ms  x{row['cost_vs_best']:.2f}"
        if name.startswith("ensemble"):
            row["vs_best_member"] = paired_gain(scores[name], scores[best], task.name)
            g = row["vs_best_member"]
            line += f"  gain {g['gain']:+.4f} (95% bounds {g['low']:+.4f} .. {g['high']:+.4f})"
        rows[name] = row
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"model": shipped, "task": task.name, "cases": len(images), "best_member": best,
                                         "combine": args.combine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
