"""``--explain recipro-cam``: saliency for CNN classifiers that do not end in pooling + one Linear layer.

Recipro-CAM (Byun and Lee, "Recipro-CAM: Fast gradient-free visual explanations for convolutional neural networks",
2022) needs no gradient and no particular head: the feature map ``F`` (K, h, w) of the last convolution is copied
h*w times, copy (i, j) kept only around location (i, j) (a 3x3 Gaussian-like mask, 1 at the centre), and the rest of
the network is run on every copy; the class's softmax score per copy, min-max scaled, is the map. Convert bakes that
into the exported graph as a batched branch: a forward hook on the target convolution appends the h*w masked copies
to the batch, so everything after it runs once on 1 + h*w items and the graph gets one extra output, the copies'
logits (N, h*w, C). Every artifact built from that ONNX carries it (so the drift gate can compare maps); the
runtime's part is a softmax and a reshape (:class:`edgemed.explain.saliency.ReciproExplainer`), numpy only.

What the branch costs is h*w runs of the layers after the target (the shipped CNN: 49 runs of its last block and
head); ``bench`` reports predict's latency with and without it. A model whose layers after the target mix items of a
batch, or that reshapes with a batch size taken from its input, gives wrong copies: convert checks on one run that
the first item's logits are the model's own, and refuses otherwise, in one line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.errors import OptionError

from .explain import SANITY_CASES, SANITY_MAX_MEAN_RANK, SanityCheck, traced_run

RECIPRO_OUTPUT = "recipro_logits"  # the extra graph output: the head's logits on each masked copy, (N, h*w, C)
KERNEL = np.array([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]], np.float32)  # the mask around (i, j)
LOGITS_ATOL, LOGITS_RTOL = 1e-4, 1e-4  # the branch must leave the model's own logits as they were (round-off)

_FIX = ("use --explain recipro-cam for CNN classifiers (a Conv2d layer, then layers that treat each item of a batch "
        "alone), or --explain cam for ones ending in global average pooling and one Linear layer, or drop --explain")


def masks(h: int, w: int) -> np.ndarray:
    """(h*w, 1, h, w): mask i*w + j is KERNEL centred on (i, j), cut at the borders."""
    out = np.zeros((h * w, 1, h + 2, w + 2), np.float32)
    for i in range(h):
        for j in range(w):
            out[i * w + j, 0, i:i + 3, j:j + 3] = KERNEL
    return out[:, :, 1:-1, 1:-1].copy()


def _refuse(problem: str) -> OptionError:
    return OptionError(f"--explain recipro-cam: {problem}", _FIX)


@dataclass
class ReciproTarget:
    """The convolution whose feature map is masked, and what convert records of it."""

    target_layer: str
    feature_shape: tuple[int, int, int]  # (K, h, w) at the declared input shape
    classes: int  # logits per item
    sanity: SanityCheck | None = None
    method = "recipro-cam"
    output = RECIPRO_OUTPUT

    @property
    def grid(self) -> tuple[int, int]:
        return self.feature_shape[1], self.feature_shape[2]

    def line(self) -> str:
        h, w = self.grid
        return (f"explain: recipro-cam masks {self.target_layer!r} {list(self.feature_shape)} at {h * w} locations "
                "(a batched branch in the graph)")

    def exporting(self, module: Any):
        return with_recipro(module, self)

    def explainer(self, input_hw: tuple[int, int]) -> Any:
        from edgemed.explain.saliency import ReciproExplainer

        return ReciproExplainer(RECIPRO_OUTPUT, self.grid, tuple(input_hw))

    def sanity_check(self, module: Any, inputs: Any) -> SanityCheck:
        return randomisation_check(module, self, inputs)

    def write(self, bundle_dir: Path) -> Any:
        from edgemed.manifest import Explanation

        return Explanation(method="recipro-cam", target_layer=self.target_layer, features_output=RECIPRO_OUTPUT,
                           grid=list(self.grid))

    def report(self) -> dict:
        return {"method": "recipro-cam", "target_layer": self.target_layer, "features": list(self.feature_shape),
                "masks": int(np.prod(self.grid)), "output": RECIPRO_OUTPUT,
                "sanity": self.sanity.record() if self.sanity else None}


def find_recipro_target(module: Any, input_shape: tuple[int, ...], kind: str) -> ReciproTarget:
    """The last Conv2d the model runs (execution order), checked by running the batched branch once on a seeded
    random input: the first item's logits must be the model's own."""
    import torch
    from torch import nn

    events, out, x = traced_run(module, input_shape, kind, "recipro-cam", lambda name, m: isinstance(m, nn.Conv2d),
                                _refuse)
    ran = [(name, o) for name, _, _, o in events]
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise _refuse(f"the model's output ({list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__})"
                      " is not one (N, classes) tensor")
    if not ran or ran[-1][1].ndim != 4:
        raise _refuse("the model runs no Conv2d layer with a 4-D output to mask")
    name, features = ran[-1]
    target = ReciproTarget(name, tuple(int(d) for d in features.shape[1:]), int(out.shape[1]))
    problem = (f"with the masked copies of {name!r} appended to the batch the model no longer gives its own logits "
               "(its layers after it mix the items of a batch, or reshape by the input's batch size)")
    try:
        logits, copies = run_with_branch(module, target, x)
    except Exception as exc:  # noqa: BLE001 - the user's layers on the longer batch
        from edgemed.errors import error_line

        raise _refuse(f"{problem}: {error_line(exc, 120)}") from exc
    if not np.allclose(logits, out.float().numpy(), atol=LOGITS_ATOL, rtol=LOGITS_RTOL) or \
            copies.shape != (len(x), int(np.prod(target.grid)), target.classes):
        raise _refuse(problem)
    return target


def _expander(target: ReciproTarget, mask: Any):
    """A forward hook on the target layer: its output, then each item's h*w masked copies, as one batch."""
    k, h, w = target.feature_shape

    def expand(_module: Any, _inputs: tuple, out: Any) -> Any:
        import torch

        n = out.shape[0]
        copies = (out[:, None] * mask[None]).reshape(n * h * w, k, h, w)
        return torch.cat([out, copies])

    return expand


@contextlib.contextmanager
def with_recipro(module: Any, target: ReciproTarget) -> Iterator[Any]:
    """A module returning ``(logits, the masked copies' logits (N, h*w, C))``: what convert exports with
    ``--explain recipro-cam``. The user's forward runs unchanged; the hook is removed on leaving."""
    import torch
    from torch import nn

    h, w = target.grid

    class WithRecipro(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = module
            self.register_buffer("mask", torch.from_numpy(masks(h, w)))

        def forward(self, x):
            n = x.shape[0]
            z = self.model(x)
            return z[:n], z[n:].reshape(n, h * w, z.shape[1])

    wrapper = WithRecipro().eval()
    layer = dict(module.named_modules())[target.target_layer]
    handle = layer.register_forward_hook(_expander(target, wrapper.mask))
    try:
        yield wrapper
    finally:
        handle.remove()


def run_with_branch(module: Any, target: ReciproTarget, x: Any) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, C), copies' logits (N, h*w, C)) of ``module`` with the branch, in PyTorch: what the exported graph
    computes (the maps a test or the sanity check computes by hand)."""
    import torch

    with with_recipro(module, target) as wrapped, torch.no_grad():
        logits, copies = wrapped(torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32)))
    return logits.float().numpy(), copies.float().numpy()


def randomisation_check(module: Any, target: ReciproTarget, inputs: Any, cases: int = SANITY_CASES) -> SanityCheck:
    """Adebayo et al.'s model-parameter randomisation test for recipro-cam: the target convolution of a copy is
    re-initialised (seeded) and the trained and randomised maps of the trained model's class compared case by case."""
    import copy
    import itertools

    import torch

    from edgemed.explain.saliency import recipro_map
    from edgemed.gate.saliency_drift import rank_correlation

    batch = [np.ascontiguousarray(x, dtype=np.float32) for x in itertools.islice(inputs, cases)]
    if not batch:
        return SanityCheck(None, 0, None, None, None)
    randomised = copy.deepcopy(module).eval()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        dict(randomised.named_modules())[target.target_layer].reset_parameters()
    ranks = []
    for x in batch:
        logits, trained = run_with_branch(module, target, x)
        _, random = run_with_branch(randomised, target, x)
        c = int(np.argmax(logits[0]))
        ranks.append(rank_correlation(recipro_map(trained[0], c, target.grid), recipro_map(random[0], c, target.grid)))
    mean = float(np.mean(ranks))
    return SanityCheck(target.target_layer, len(ranks), round(mean, 4), round(float(np.max(ranks)), 4),
                       mean < SANITY_MAX_MEAN_RANK)
