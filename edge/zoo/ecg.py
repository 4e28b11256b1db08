"""Beat classifiers for one-lead ECG windows (N, C, L): a 1-D CNN and a CNN with a recurrent head.

Both read a beat window (1.5 s at 120 Hz = 180 samples by default) and give AAMI class logits.
The recurrent one downsamples with two convolutions first, so its LSTM/GRU runs over 45 steps,
not 180: the sequence is what edge toolchains struggle with, so it is kept short.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm1d(cout), nn.ReLU())


class ECGCNN(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 4, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv(in_channels, width, 7), nn.MaxPool1d(2),
            _conv(width, width * 2, 5), nn.MaxPool1d(2),
            _conv(width * 2, width * 4, 5), nn.MaxPool1d(2),
            _conv(width * 4, width * 4, 3),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(0.2),
                                  nn.Linear(width * 4, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ECGRNN(nn.Module):
    """Convolutional front end, then an LSTM or GRU (optionally bidirectional) over the downsampled beat."""

    def __init__(self, in_channels: int = 1, num_classes: int = 4, width: int = 16, hidden: int = 32,
                 cell: str = "lstm", bidirectional: bool = True) -> None:
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise TypeError(f"cell must be 'lstm' or 'gru', got {cell!r}")
        self.front = nn.Sequential(_conv(in_channels, width, 7), nn.MaxPool1d(2),
                                   _conv(width, width * 2, 5), nn.MaxPool1d(2))
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(width * 2, hidden, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = self.front(x).transpose(1, 2)  # (N, steps, features)
        out, _ = self.rnn(seq)
        return self.head(out.mean(dim=1))
