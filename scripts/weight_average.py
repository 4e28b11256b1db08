"""The exponential moving average of trained weights the BUSI and RR training scripts keep (their shipped weights
are the average, not the last step's): one update, shared."""

from __future__ import annotations

import torch


def update_average(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``average`` moves ``1 - decay`` of the way to ``model``; counters (BatchNorm's) are copied as they are."""
    with torch.no_grad():
        for a, p in zip(average.state_dict().values(), model.state_dict().values()):
            if a.dtype.is_floating_point:
                a.mul_(decay).add_(p, alpha=1 - decay)
            else:
                a.copy_(p)
