"""Beat classifiers for one-lead ECG windows (N, C, L): a 1-D CNN, a CNN with a recurrent head, and a
CNN that also reads the beat's RR intervals (a second input).

All read a beat window (1.5 s at 120 Hz = 180 samples by default) and give AAMI class logits.
The recurrent one downsamples with two convolutions first, so its LSTM/GRU runs over 45 steps,
not 180: the sequence is what edge toolchains struggle with, so it is kept short.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgemed.rr_intervals import RR_FEATURES, rr_features  # noqa: F401 - the model's second input


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


class ECGRR(nn.Module):
    """A beat classifier with two inputs: the beat window (N, 1, L) and its RR intervals (N, 4) in seconds.

    The rhythm is half of what tells a premature supraventricular beat from a normal one (its shape is
    often normal): de Chazal et al. 2004's inter-patient classifier owes its S sensitivity to RR features.
    The intervals enter as raw seconds ``[rr_pre, rr_post, rr_local, rr_average]`` (:func:`rr_features`)
    and are normalised in the graph, so every patient's own rhythm is the reference: log ratios of
    rr_pre, rr_post and rr_local to rr_average, rr_pre to rr_local, rr_post to rr_pre, and the log of
    rr_average (the heart rate, relative to 0.8 s), each clipped to [-1, 1]. The beat goes through a
    small 1-D CNN (as :class:`ECGCNN`); ``beat_scale`` divides it by its standard deviation first.

    Built for INT8 (ONNX Runtime's static QDQ gives every quantized tensor one scale): the clipped log
    ratios share one range, so the rhythm's quantization step is 2/255 in log units (0.8% of an interval)
    whatever pauses the calibration beats hold, and the head adds a linear map of each branch instead of
    concatenating them, so beat and rhythm features keep their own scales.
    """

    RR_CLIP = 1.0
    RR_REFERENCE_S = 0.8

    def __init__(self, in_channels: int = 1, num_classes: int = 4, width: int = 16, rr_hidden: int = 16,
                 hidden: int = 32, beat_scale: bool = False) -> None:
        super().__init__()
        self.beat_scale = beat_scale
        self.features = nn.Sequential(
            _conv(in_channels, width, 7), nn.MaxPool1d(2),
            _conv(width, width * 2, 5), nn.MaxPool1d(2),
            _conv(width * 2, width * 4, 5), nn.MaxPool1d(2),
            _conv(width * 4, width * 4, 3), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        )
        self.rr = nn.Sequential(nn.Linear(6, rr_hidden), nn.ReLU())
        self.beat_to_hidden = nn.Linear(width * 4, hidden)
        self.rr_to_hidden = nn.Linear(rr_hidden, hidden, bias=False)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, num_classes))

    @classmethod
    def rhythm(cls, rr: torch.Tensor) -> torch.Tensor:
        """(N, 4) seconds -> (N, 6) patient-relative log ratios, each clipped to [-1, 1]."""
        log = torch.log(rr.clamp(0.1, 10.0))
        pre, post, local, average = log[:, 0:1], log[:, 1:2], log[:, 2:3], log[:, 3:4]
        ratios = torch.cat([pre - average, post - average, local - average, pre - local, post - pre,
                            average - float(np.log(cls.RR_REFERENCE_S))], 1)
        return ratios.clamp(-cls.RR_CLIP, cls.RR_CLIP)

    def forward(self, beat: torch.Tensor, rr: torch.Tensor) -> torch.Tensor:
        if self.beat_scale:
            beat = beat / beat.std(dim=2, keepdim=True).clamp(min=0.01)
        hidden = self.beat_to_hidden(self.features(beat)) + self.rr_to_hidden(self.rr(self.rhythm(rr)))
        return self.head(hidden)
