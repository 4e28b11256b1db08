"""Real images in the thousands, as a site would hold them: every BreastMNIST image and crops of BUSI frames (the
same breast ultrasound BreastMNIST was made from) at BreastMNIST's 28x28."""

from __future__ import annotations

import numpy as np
from PIL import Image


def breast_images(breastmnist: dict, busi: dict, crops: int = 4000, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    images = [*breastmnist["train_images"], *breastmnist["val_images"], *breastmnist["test_images"]]
    for _ in range(crops):
        im = busi["images"][rng.integers(0, len(busi["images"]))]
        side = int(rng.integers(96, 256))
        y, x = rng.integers(0, 256 - side + 1, 2)
        images.append(np.asarray(Image.fromarray(im[y:y + side, x:x + side]).resize((28, 28),
                                                                                     Image.Resampling.BILINEAR)))
    return images
