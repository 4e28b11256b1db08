"""Train the two small models shipped in edgemed/assets on the real data in ../shared/data.

- unet_busi: UNet2D(base=16) lesion segmentation on BUSI breast ultrasound (train split;
  best epoch chosen on val; Dice reported on test).
- cnn_breastmnist: SmallCNN on BreastMNIST (MedMNIST v2), malignant vs benign/normal.

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
from edgemed.preprocess import Preprocessor, resize_array
from edgemed.zoo import build

UNET_SIZE = 128
UNET_SPEC = [
    {"op": "to_gray"},
    {"op": "resize", "size": [UNET_SIZE, UNET_SIZE], "interpolation": "bilinear"},
    {"op": "minmax"},
]
CNN_SPEC = [
    {"op": "to_gray"},
    {"op": "resize", "size": [28, 28], "interpolation": "bilinear"},
    {"op": "scale", "factor": 1 / 255},
    {"op": "normalize", "mean": [0.5], "std": [0.5]},
]


def _prep(spec, shape, images):
    pre = Preprocessor(spec, shape)
    return np.concatenate([pre(im).tensor for im in images])


def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean per-image lesion Dice; an image with no lesion and no prediction scores 1."""
    scores = []
    for p, t in zip(pred.astype(bool), truth.astype(bool)):
        denom = p.sum() + t.sum()
        scores.append(1.0 if denom == 0 else 2.0 * (p & t).sum() / denom)
    return float(np.mean(scores))


def train_unet(data: Path, out: Path, epochs: int, seed: int) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    npz = np.load(data / "busi_256.npz")
    split = npz["split"]
    shape = [1, 1, UNET_SIZE, UNET_SIZE]
    x = {s: torch.from_numpy(_prep(UNET_SPEC, shape, npz["images"][split == s])) for s in ("train", "val", "test")}
    y = {s: torch.from_numpy(np.stack([resize_array(m, (UNET_SIZE, UNET_SIZE), "nearest")
                                       for m in npz["masks"][split == s]]).astype(np.int64))
         for s in ("train", "val", "test")}
    model = build("unet", in_channels=1, num_classes=2, base=16)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * ((len(x["train"]) + 15) // 16))
    best, best_state = -1.0, None
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(x["train"]))
        for i in range(0, len(order), 16):
            idx = torch.from_numpy(order[i:i + 16])
            xb, yb = x["train"][idx], y["train"][idx]
            flip = torch.rand(len(idx)) < 0.5
            xb[flip], yb[flip] = xb[flip].flip(-1), yb[flip].flip(-1)
            logits = model(xb)
            prob = logits.softmax(1)[:, 1]
            fg = (yb == 1).float()
            soft_dice = 1 - (2 * (prob * fg).sum() + 1) / (prob.sum() + fg.sum() + 1)
            loss = F.cross_entropy(logits, yb) + soft_dice
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            pred = model(x["val"]).argmax(1).numpy()
        val = dice_score(pred, y["val"].numpy())
        print(f"unet epoch {epoch + 1}/{epochs} loss {loss.item():.3f} val dice {val:.3f}", flush=True)
        if val > best:
            best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        test = dice_score(model(x["test"]).argmax(1).numpy(), y["test"].numpy())
    torch.save(model.state_dict(), out / "unet_busi.pt")
    card = {
        "name": "unet_busi",
        "task": "segmentation",
        "arch": "unet",
        "arch_args": {"in_channels": 1, "num_classes": 2, "base": 16},
        "input_shape": shape,
        "labels": ["background", "lesion"],
        "preprocess": UNET_SPEC,
        "training": {
            "data": "BUSI (busi_256.npz)", "data_sha256": sha256_file(data / "busi_256.npz"),
            "split": "train 546 / val 118 (model selection) / test 116", "epochs": epochs, "seed": seed,
            "metric": "mean per-image lesion Dice at 128x128 (empty/empty = 1)",
            "val_dice": round(best, 4), "test_dice": round(test, 4),
            "script": "scripts/train_models.py",
        },
    }
    (out / "unet_busi.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


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
    ap.add_argument("--unet-epochs", type=int, default=40)
    ap.add_argument("--cnn-epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["unet", "cnn"])
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    t = time.time()
    if args.only in (None, "cnn"):
        print(json.dumps(train_cnn(args.data, args.out, args.cnn_epochs, args.seed)["training"], indent=2))
    if args.only in (None, "unet"):
        print(json.dumps(train_unet(args.data, args.out, args.unet_epochs, args.seed)["training"], indent=2))
    print(f"trained in {time.time() - t:.0f} s")


if __name__ == "__main__":
    main()
