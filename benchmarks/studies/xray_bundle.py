"""A bundle with preprocessing of its own, for the overhead benchmark: a chest X-ray style CNN.

28x28 grey frames (MedMNIST size) are replicated to RGB, resized to 224x224 bilinear and
normalised with ImageNet statistics, as torchvision-trained models expect. The weights are
random (seeded): the benchmark measures cost, not accuracy.

    python benchmarks/studies/xray_bundle.py OUT_BUNDLE
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from edgemed.converters.convert import convert
from edgemed.samples import samples_dir

SPEC = (
    {"op": "to_rgb"},
    {"op": "resize", "size": [224, 224], "interpolation": "bilinear"},
    {"op": "scale", "factor": 1 / 255},
    {"op": "normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
)


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 7, stride=2, padding=3), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 2)).eval()


def build(out: Path, scratch: Path) -> Path:
    scratch.mkdir(parents=True, exist_ok=True)
    src = scratch / "xray_cnn.pt"
    torch.jit.save(torch.jit.trace(model(), torch.zeros(1, 3, 224, 224)), src)
    return convert(src, out, task="classification", input_shape=(1, 3, 224, 224), preprocess=SPEC,
                   labels=("normal", "pneumonia"), calib=samples_dir("breastmnist"), targets=("onnx", "openvino"),
                   precisions=("fp32", "fp16"), force=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    print(build(args.out, args.out.parent / ".xray-src"))
