"""A small anchor-free lesion detector (CenterNet-style: Zhou et al., "Objects as Points", 2019).

Plain convolutions only (no torchvision ops, so it traces and exports anywhere): a four-stage
strided backbone, a two-step upsampling neck back to 1/4 resolution, and three heads per cell:
a class heatmap, the box size and the sub-cell offset of the centre. ``forward`` decodes in the
graph into edgemed's detection layout, two tensors any backend can run:

- ``boxes`` (N, cells, 4): x1, y1, x2, y2 in input pixels;
- ``scores`` (N, cells, classes): the heatmap where it is a local 3x3 maximum (CenterNet's
  peak extraction, which stands in for most of NMS), 0 elsewhere.

Non-maximum suppression and the score threshold follow, in the graph or on the host, as the
bundle's postprocess spec says. ``heads`` gives the raw maps for training.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class CenterNetLite(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 1, width: int = 16) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(_conv(in_channels, w, 2), _conv(w, w))  # 1/2
        self.s4 = nn.Sequential(_conv(w, 2 * w, 2), _conv(2 * w, 2 * w))  # 1/4
        self.s8 = nn.Sequential(_conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w))  # 1/8
        self.s16 = nn.Sequential(_conv(4 * w, 8 * w, 2), _conv(8 * w, 8 * w))  # 1/16
        self.up8 = _conv(8 * w + 4 * w, 4 * w)
        self.up4 = _conv(4 * w + 2 * w, 2 * w)
        self.heat = nn.Sequential(_conv(2 * w, 2 * w), nn.Conv2d(2 * w, num_classes, 1))
        self.size = nn.Sequential(_conv(2 * w, 2 * w), nn.Conv2d(2 * w, 2, 1))
        self.offset = nn.Sequential(_conv(2 * w, 2 * w), nn.Conv2d(2 * w, 2, 1))
        self.heat[-1].bias.data.fill_(-2.19)  # CenterNet's prior: sigmoid = 0.1
        self.stride = 4
        self.input_multiple = 16

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(heatmap logits (N,C,h,w), box size in input pixels (N,2,h,w), centre offset in cells (N,2,h,w))."""
        f4 = self.s4(self.stem(x))
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        u8 = self.up8(torch.cat([F.interpolate(f16, scale_factor=2.0, mode="nearest"), f8], 1))
        u4 = self.up4(torch.cat([F.interpolate(u8, scale_factor=2.0, mode="nearest"), f4], 1))
        return self.heat(u4), F.relu(self.size(u4)) * self.stride, torch.sigmoid(self.offset(u4))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heat, size, offset = self.heads(x)
        n, c, h, w = heat.shape
        prob = torch.sigmoid(heat)
        peaks = prob * (F.max_pool2d(prob, 3, stride=1, padding=1) == prob).to(prob.dtype)
        ys = torch.arange(h, dtype=x.dtype, device=x.device).view(1, h, 1).expand(1, h, w)
        xs = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, w).expand(1, h, w)
        cx = (xs + offset[:, 0]) * self.stride
        cy = (ys + offset[:, 1]) * self.stride
        half_w, half_h = size[:, 0] / 2, size[:, 1] / 2
        boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1).reshape(n, h * w, 4)
        scores = peaks.permute(0, 2, 3, 1).reshape(n, h * w, c)
        return boxes, scores
