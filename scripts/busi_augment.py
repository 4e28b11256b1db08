"""Augmentation shared by the BUSI training scripts (train_unet.py, train_detector.py).

BUSI has 546 training frames, so the small shipped models overfit without it: every batch is
flipped, rotated, scaled and shifted (one random affine map per frame, applied to the image and its
lesion mask alike), and its grey levels are varied (gamma, contrast, brightness, speckle-like noise),
then min-max rescaled again where the deployed spec does that, so training never sees pixels the
deployed preprocessing could not produce. Plain torch on CPU; the caller's torch.Generator makes it
deterministic.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def random_affine(n: int, gen: torch.Generator, rotate_deg: float = 15.0, scale: tuple[float, float] = (0.85, 1.2),
                  shift: float = 0.1, hflip: bool = True) -> torch.Tensor:
    """(n, 2, 3) maps from output to input coordinates in [-1, 1] (affine_grid's convention): a zoom by
    ``scale`` (> 1 enlarges), a rotation, a shift by up to ``shift`` of the side, a horizontal flip half the time."""
    angle = _uniform(gen, n, -rotate_deg, rotate_deg) * math.pi / 180
    zoom = torch.exp(_uniform(gen, n, math.log(scale[0]), math.log(scale[1])))
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) if hflip else torch.ones(n)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta[:, :, 2] = _uniform(gen, 2 * n, -2 * shift, 2 * shift).view(n, 2)
    return theta


def warp(x: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Apply the maps to (N, C, H, W); outside the frame is 0 (as the black borders of ultrasound frames)."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def warp_points(theta: torch.Tensor, xy: torch.Tensor, size: int) -> torch.Tensor:
    """Where pixel coordinates (n, P, 2) of the input land in the warped output (the inverse of theta's map)."""
    a, t = theta[:, :, :2], theta[:, :, 2:]
    norm = xy / size * 2 - 1  # pixel edges 0..size -> -1..1 (align_corners=False)
    out = torch.linalg.solve(a, (norm.transpose(1, 2) - t)).transpose(1, 2)
    return (out + 1) / 2 * size


def intensity(x: torch.Tensor, gen: torch.Generator, rescale: bool) -> torch.Tensor:
    """Random gamma, contrast, brightness and multiplicative noise on frames in [0, 1]; min-max per frame after
    if ``rescale`` (the deployed spec's last op), else clipped back to [0, 1]."""
    n = x.shape[0]
    shape = (n, 1, 1, 1)
    gamma = torch.exp(_uniform(gen, n, -0.4, 0.4)).view(shape)
    x = x.clamp(0, 1) ** gamma
    x = x * _uniform(gen, n, 0.8, 1.2).view(shape) + _uniform(gen, n, -0.08, 0.08).view(shape)
    sigma = _uniform(gen, n, 0.0, 0.1).view(shape)
    x = x * (1 + sigma * torch.randn(x.shape, generator=gen))
    if rescale:
        low = x.amin(dim=(1, 2, 3), keepdim=True)
        high = x.amax(dim=(1, 2, 3), keepdim=True)
        return (x - low) / (high - low).clamp(min=1e-6)
    return x.clamp(0, 1)
