"""Train the lesion detector shipped in edgemed/assets (det_busi) on the BUSI train split.

Boxes come from the lesion masks (one box per connected component; `normal` cases have none).
CenterNet-style targets at 1/4 resolution: a Gaussian peak per box centre (penalty-reduced focal
loss), the box size and the centre's sub-cell offset at the peak (L1). Inputs go through
edgemed's own Preprocessor with the spec stored next to the weights. Model selection on the val
split by mAP@0.5; test mAP@0.5, mAP@[.5:.95] (pycocotools) and FROC recorded in the card.
Deterministic on CPU (seeded).

    python scripts/train_detector.py --data ../shared/data --out edge/assets
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from edgemed.detection import boxes_from_mask
from edgemed.hashing import sha256_file
from edgemed.preprocess import Preprocessor
from edgemed.zoo import build

SIZE = 128
SPEC = [
    {"op": "to_gray"},
    {"op": "resize", "size": [SIZE, SIZE], "interpolation": "bilinear"},
    {"op": "scale", "factor": 1 / 255},
]
STRIDE = 4
MIN_LESION_PX = 16  # at 256 px: specks in the masks are not lesions


def targets(boxes: list[np.ndarray], cells: int) -> tuple[torch.Tensor, ...]:
    """Heatmap (N,1,h,w), size (N,2,h,w), offset (N,2,h,w) and the mask of cells that hold a centre."""
    n = len(boxes)
    heat = np.zeros((n, 1, cells, cells), np.float32)
    size = np.zeros((n, 2, cells, cells), np.float32)
    offset = np.zeros((n, 2, cells, cells), np.float32)
    centre = np.zeros((n, 1, cells, cells), np.float32)
    ys, xs = np.mgrid[0:cells, 0:cells]
    for i, bs in enumerate(boxes):
        for x1, y1, x2, y2 in bs:
            w, h = x2 - x1, y2 - y1
            cx, cy = (x1 + x2) / 2 / STRIDE, (y1 + y2) / 2 / STRIDE
            ix, iy = min(int(cx), cells - 1), min(int(cy), cells - 1)
            sigma = max(0.5, (min(w, h) / STRIDE) / 6)
            heat[i, 0] = np.maximum(heat[i, 0], np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma ** 2)))
            size[i, :, iy, ix] = (w, h)
            offset[i, :, iy, ix] = (cx - ix, cy - iy)
            centre[i, 0, iy, ix] = 1.0
    return tuple(torch.from_numpy(a) for a in (heat, size, offset, centre))


def focal(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = -torch.log(1 - p) * p ** 2 * (1 - target) ** 4 * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def detect(model, x: torch.Tensor, threshold: float = 0.05) -> list:
    from edgemed.detection import Detections, nms

    with torch.no_grad():
        boxes, scores = model(x)
    out = []
    for b, s in zip(boxes.numpy(), scores.numpy()):
        s = s[:, 0]
        keep = np.flatnonzero(s >= threshold)
        classes = np.zeros(keep.size, np.int64)
        k = nms(b[keep], s[keep], classes, 0.5, 100)
        out.append(Detections(b[keep][k], s[keep][k], classes[k]))
    return out


def coco_map(truth: list[np.ndarray], dets: list) -> tuple[float, float]:
    """mAP@0.5 and mAP@[.5:.95] with pycocotools."""
    from edgemed.benchmarks.detection_metrics import coco_ap

    return coco_ap(truth, dets, ["lesion"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("edge/assets"))
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    npz = np.load(args.data / "busi_256.npz")
    split, images, masks = npz["split"], npz["images"], npz["masks"]
    pre = Preprocessor(SPEC, [1, 1, SIZE, SIZE])
    scale = SIZE / images.shape[1]
    x = {s: torch.from_numpy(np.concatenate([pre(im).tensor for im in images[split == s]])) for s in
         ("train", "val", "test")}
    boxes = {s: [boxes_from_mask(m, MIN_LESION_PX) * scale for m in masks[split == s]]
             for s in ("train", "val", "test")}
    cells = SIZE // STRIDE
    model = build("centernet", in_channels=1, num_classes=1, width=16)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = args.epochs * ((len(x["train"]) + 15) // 16)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    best, best_state = -1.0, None
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(x["train"]))
        for i in range(0, len(order), 16):
            idx = order[i:i + 16]
            xb = x["train"][idx].clone()
            bb = [boxes["train"][j].copy() for j in idx]
            for k in range(len(idx)):  # horizontal flip
                if rng.random() < 0.5:
                    xb[k] = xb[k].flip(-1)
                    b = bb[k]
                    bb[k] = np.stack([SIZE - b[:, 2], b[:, 1], SIZE - b[:, 0], b[:, 3]], 1) if len(b) else b
            heat_t, size_t, off_t, centre = targets(bb, cells)
            heat, size, offset = model.heads(xb)
            n_pos = centre.sum().clamp(min=1)
            loss = (focal(heat, heat_t) + 0.1 * (F.l1_loss(size * centre, size_t * centre, reduction="sum") / n_pos)
                    + (F.l1_loss(offset * centre, off_t * centre, reduction="sum") / n_pos))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        val50, _ = coco_map(boxes["val"], detect(model, x["val"]))
        print(f"detector epoch {epoch + 1}/{args.epochs} loss {loss.item():.3f} val mAP@0.5 {val50:.3f}", flush=True)
        if val50 > best:
            best, best_state = val50, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    test_dets = detect(model, x["test"])
    test50, test5095 = coco_map(boxes["test"], test_dets)
    from edgemed.benchmarks.detection_metrics import froc

    curve = froc(boxes["test"], test_dets)
    torch.save(model.state_dict(), args.out / "det_busi.pt")
    card = {
        "name": "det_busi",
        "task": "detection",
        "arch": "centernet",
        "arch_args": {"in_channels": 1, "num_classes": 1, "width": 16},
        "input_shape": [1, 1, SIZE, SIZE],
        "labels": ["lesion"],
        "preprocess": SPEC,
        "detection": {"layout": "edgemed", "score_threshold": 0.25, "iou_threshold": 0.5, "max_detections": 100},
        "training": {
            "data": "BUSI (busi_256.npz); boxes: one per connected component of the lesion mask (>= 16 px at 256)",
            "data_sha256": sha256_file(args.data / "busi_256.npz"),
            "split": "train 546 / val 118 (model selection by mAP@0.5) / test 116", "epochs": args.epochs,
            "seed": args.seed, "metric": "test mAP@0.5 and mAP@[.5:.95] (pycocotools), FROC at 1/8..8 FP/image",
            "val_map50": round(best, 4), "test_map50": round(test50, 4), "test_map50_95": round(test5095, 4),
            "test_froc": {str(k): round(v, 4) for k, v in curve.items()},
            "script": "scripts/train_detector.py",
        },
    }
    (args.out / "det_busi.json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card["training"], indent=2))
    print(f"trained in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
