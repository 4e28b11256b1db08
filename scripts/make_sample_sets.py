"""Write the real-image sets shipped in edgemed/assets/samples/calibration from ../shared/data.

They let ``edgemed demo`` calibrate INT8 *and* take verdicts on enough held-out cases to bound them
on a fresh machine with no other data: all 546 BreastMNIST train images, 240 BUSI train-split
frames (evenly spaced over the sorted split, so every class is in) at the U-Net's 128x128 input
size with their lesion masks, and the other 540 BUSI frames (every split) the same way as the segmenter's and
detector's verdict set: a lesion-agreement budget of 0.99 needs about 300 cases even when nothing flips.
Deterministic.

    python scripts/make_sample_sets.py --data ../shared/data --out edge/assets/samples/calibration
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("edge/assets/samples/calibration"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with np.load(args.data / "breastmnist.npz") as d:
        np.savez_compressed(args.out / "breastmnist_train.npz", images=d["train_images"], labels=d["train_labels"])
    with np.load(args.data / "busi_256.npz") as d:
        train = np.flatnonzero(d["split"] == "train")
        pick = train[np.linspace(0, len(train) - 1, 240).round().astype(int)]
        _save_busi(d, pick, args.out / "busi_train240.npz")
        _save_busi(d, np.setdiff1d(np.arange(len(d["images"])), pick), args.out / "busi_verdict540.npz")
    for p in sorted(args.out.glob("*.npz")):
        print(p, p.stat().st_size)


def _save_busi(d, pick: np.ndarray, path: Path) -> None:
    images = np.stack([np.asarray(Image.fromarray(im).resize((128, 128), Image.Resampling.BILINEAR))
                       for im in d["images"][pick]])
    masks = np.stack([np.asarray(Image.fromarray(m).resize((128, 128), Image.Resampling.NEAREST))
                      for m in d["masks"][pick]])
    np.savez_compressed(path, images=images, masks=masks, labels=d["labels"][pick],
                        names=d["names"][pick].astype("U64"))


if __name__ == "__main__":
    main()
