"""Train the small classifier shipped in edgemed/assets on the real data in ../shared/data.

- cnn_breastmnist: SmallCNN on BreastMNIST (MedMNIST v2), malignant vs benign/normal.

(The BUSI U-Net, unet_busi, is trained by scripts/train_unet.py, with augmentation; the detector by
scripts/train_detector.py.)

Inputs go through edgemed's own Preprocessor with the very spec stored next to the weights,
so training, calibration and deployment see identical pixels. Deterministic on CPU (seeded).

    python scripts/train_models.py --data ../shared/data --out edge/assets
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgemed.hashing import sha256_file
from edgemed.preprocess import Preprocessor
from edgemed.zoo import build

CNN_SPEC = [
    {"op": "to_gray"},
    {"op": "resize", "size": [28, 28], "interpolation": "bilinear"},
    {"op": "scale", "factor": 1 / 255},
    {"op": "normalize", "mean": [0.5], "std": [0.5]},
]


def _prep(spec, shape, images):
    pre = Preprocessor(spec, shape)
    return np.concatenate([pre(im).tensor for im in images])


def train_cnn(data: Path, out: Path, epochs: int, seed: int) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    npz = np.load(data / "breastmnist.npz")
    shape = [1, 1, 28, 28]
    x = {s: torch.from_numpy(_prep(CNN_SPEC, shape, npz[f"{s}_images"])) for s in ("train", "val", "test")}
    y = {s: torch.from_numpy(npz[f"{s}_labels"].astype(np.int64)) for s in ("train", "val", "test")}
    model = build("cnn", in_channels=1, num_classes=2, width=16)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    best, best_state = -1.0, None
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(x["train"]))
        for i in range(0, len(order), 32):
            idx = torch.from_numpy(order[i:i + 32])
            xb = x["train"][idx]
            flip = torch.rand(len(idx)) < 0.5
            xb[flip] = xb[flip].flip(-1)
            loss = F.cross_entropy(model(xb), y["train"][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            val = float((model(x["val"]).argmax(1) == y["val"]).float().mean())
        print(f"cnn epoch {epoch + 1}/{epochs} loss {loss.item():.3f} val acc {val:.3f}", flush=True)
        if val >= best:
            best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        test = float((model(x["test"]).argmax(1) == y["test"]).float().mean())
    torch.save(model.state_dict(), out / "cnn_breastmnist.pt")
    card = {
        "name": "cnn_breastmnist",
        "task": "classification",
        "arch": "cnn",
        "arch_args": {"in_channels": 1, "num_classes": 2, "width": 16},
        "input_shape": shape,
        "labels": ["malignant", "benign_or_normal"],
        "preprocess": CNN_SPEC,
        "training": {
            "data": "BreastMNIST (breastmnist.npz, MedMNIST v2)",
            "data_sha256": sha256_file(data / "breastmnist.npz"),
            "split": "official train 546 / val 78 (model selection) / test 156", "epochs": epochs, "seed": seed,
            "metric": "test accuracy (MedMNIST v2 ResNet-18 baseline: 0.863)",
            "val_accuracy": round(best, 4), "test_accuracy": round(test, 4),
            "script": "scripts/train_models.py",
        },
    }
    (out / "cnn_breastmnist.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("edge/assets"))
    ap.add_argument("--cnn-epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    t = time.time()
    print(json.dumps(train_cnn(args.data, args.out, args.cnn_epochs, args.seed)["training"], indent=2))
    print(f"trained in {time.time() - t:.0f} s")


if __name__ == "__main__":
    main()
