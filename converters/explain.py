"""``--explain cam``: class activation maps from the deployed artifact itself, with no autograd at run time.

A classifier whose module ends in global average pooling and one Linear layer computes its logits as
``W @ mean_xy(F) + b``, so the class map of class ``c`` is the closed form ``sum_k W[c, k] * F_k`` (Zhou et al.,
"Learning Deep Features for Discriminative Localization", CVPR 2016). Convert finds that head in the PyTorch
module by running it once with forward hooks (the order modules really ran in, not their declaration order),
checks on that run that the head reproduces the logits from the feature map, and exports the graph with the
feature map entering the pooling as one extra output, so every artifact built from that ONNX (ORT FP32/FP16/INT8,
OpenVINO FP32/FP16/INT8, TensorRT) carries it. The head's weights go into the bundle as a hashed file; the
runtime (:mod:`edgemed.explain.saliency`) needs numpy only.

Anything else is refused in one line before a file is written: a model that ends otherwise (a U-Net's last
convolution, a Linear on flattened features, two Linear layers), a TorchScript/ExportedProgram/ONNX source
(their modules cannot be hooked, so the head cannot be found or checked).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.errors import OptionError

FEATURES_OUTPUT = "cam_features"  # the extra graph output: the feature map entering the pooling, (N, K, h, w)
HEAD_FILE = "explain_head.npz"  # weight (C, K), bias (C,): the Linear head, float32
METHODS = ("cam", "recipro-cam")
_PASS_THROUGH = ("Flatten", "Dropout", "Dropout1d", "Dropout2d", "Identity")
# The head must reproduce the module's logits from the feature map to this tolerance (FP32 round-off of a
# K-term dot product; measured 2e-7 on the shipped CNN).
HEAD_ATOL, HEAD_RTOL = 1e-4, 1e-4

_FIX = ("use --explain cam only for classifiers that end in global average pooling and one Linear layer "
        "(e.g. nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear), or drop --explain")


@dataclass
class CamHead:
    """What convert found: the pooling and Linear modules, the layer whose output enters the pooling, the head."""

    pool: Any  # the pooling nn.Module (hooked at export)
    pool_name: str
    linear_name: str
    target_layer: str
    weight: np.ndarray  # (C, K) float32
    bias: np.ndarray  # (C,) float32
    feature_shape: tuple[int, ...]  # (K, h, w) at the declared input shape
    sanity: SanityCheck | None = None  # the randomisation test on the verdict cases (convert runs it)

    method = "cam"
    output = FEATURES_OUTPUT

    def save(self, path: Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, weight=self.weight, bias=self.bias)

    # -- what convert asks of an explanation method (converters.recipro_cam.ReciproTarget answers the same) --------
    def line(self) -> str:
        return (f"explain: cam from {self.target_layer!r} {list(self.feature_shape)} through {self.pool_name!r} and "
                f"{self.linear_name!r}")

    def exporting(self, module: Any):
        return with_features(module, self)

    def explainer(self, input_hw: tuple[int, int]) -> Any:
        from edgemed.explain.saliency import CamExplainer

        return CamExplainer(self.weight, FEATURES_OUTPUT, tuple(input_hw))

    def sanity_check(self, module: Any, inputs: Any) -> SanityCheck:
        return randomisation_check(module, self, inputs)

    def write(self, bundle_dir: Path) -> Any:
        """Write the head's weights; the manifest's record of the explanation."""
        from edgemed.bundle import file_record
        from edgemed.manifest import Explanation

        self.save(bundle_dir / HEAD_FILE)
        return Explanation(method="cam", target_layer=self.target_layer, features_output=FEATURES_OUTPUT,
                           head=file_record(bundle_dir, HEAD_FILE))

    def report(self) -> dict:
        return {"method": "cam", "target_layer": self.target_layer, "pool": self.pool_name,
                "linear": self.linear_name, "features": list(self.feature_shape), "output": FEATURES_OUTPUT,
                "sanity": self.sanity.record() if self.sanity else None}


def _refuse(problem: str) -> OptionError:
    return OptionError(f"--explain cam: {problem}", _FIX)


def traced_run(module: Any, input_shape: tuple[int, ...], kind: str, method: str,
               select: Callable[[str, Any], bool], refuse: Callable[[str], OptionError]
               ) -> tuple[list[tuple[str, Any, Any, Any]], Any, Any]:
    """Run ``module`` once on a seeded random input of ``input_shape`` with forward hooks on the modules ``select``
    picks: ((name, module, inputs, output) in the order they finished, the output, the input). A source that cannot
    be hooked, or a model failing on the shape, is one line (``refuse``)."""
    import torch
    from torch import nn

    if kind in ("torchscript", "torch.export", "onnx") or not isinstance(module, nn.Module) \
            or isinstance(module, torch.jit.ScriptModule):
        raise OptionError(f"--explain {method} needs a PyTorch module to hook; a {kind} source cannot be inspected",
                          "convert the state_dict with --arch, or the pickled nn.Module with --allow-pickle, or "
                          "drop --explain")
    events: list[tuple[str, Any, Any, Any]] = []
    handles = [m.register_forward_hook(lambda m, i, o, name=name: events.append((name, m, i, o)))
               for name, m in module.named_modules() if select(name, m)]
    x = torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            out = module(x)
    except Exception as exc:  # noqa: BLE001 - the user's model on the declared shape
        from edgemed.errors import error_line

        raise refuse(f"the model fails on a {'x'.join(map(str, input_shape))} input ({error_line(exc, 160)})") \
            from exc
    finally:
        for h in handles:
            h.remove()
    return events, out, x


def find_cam_head(module: Any, input_shape: tuple[int, ...], kind: str) -> CamHead:
    """Find the global-average-pooling + Linear head of ``module`` by running it once on a seeded random input of
    ``input_shape``; raises OptionError (one line) if the module does not end that way or the head does not
    reproduce its logits."""
    import torch
    from torch import nn

    events, out, _ = traced_run(module, input_shape, kind, "cam", lambda name, m: bool(name), _refuse)
    leaves = [e for e in events if not any(True for _ in e[1].children())]
    last = f"{type(leaves[-1][1]).__name__} {leaves[-1][0]!r}" if leaves else "no layer"
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise _refuse(f"the model's output ({shape}) is not one (N, classes) tensor; its last layer is {last}")
    if not leaves or not isinstance(leaves[-1][1], nn.Linear):
        raise _refuse(f"the model's last layer is {last}, not a Linear layer")
    if leaves[-1][3] is not out:
        raise _refuse(f"the model's forward changes the output of its last layer {last} (e.g. a softmax after it)")
    linear_name, linear, linear_in, _ = leaves[-1]
    i = len(leaves) - 2
    while i >= 0 and type(leaves[i][1]).__name__ in _PASS_THROUGH:
        i -= 1
    if i < 0 or not _global_average(leaves[i][1]):
        before = f"{type(leaves[i][1]).__name__} {leaves[i][0]!r}" if i >= 0 else "nothing"
        raise _refuse(f"the Linear layer {linear_name!r} follows {before}, not global average pooling")
    pool_name, pool, pool_in, pool_out = leaves[i]
    features = pool_in[0]
    if features.ndim != 4 or not torch.equal(linear_in[0].reshape(len(features), -1), pool_out.reshape(
            len(features), -1)):
        raise _refuse(f"the Linear layer {linear_name!r} does not take the pooled features of {pool_name!r} as they "
                      "are")
    weight = linear.weight.detach().float().numpy().astype(np.float32)
    bias = (linear.bias.detach().float().numpy() if linear.bias is not None
            else np.zeros(weight.shape[0])).astype(np.float32)
    f = features.detach().float().numpy()
    again = f.mean(axis=(2, 3)) @ weight.T + bias
    if not np.allclose(again, out.detach().float().numpy(), atol=HEAD_ATOL, rtol=HEAD_RTOL):
        raise _refuse(f"the head {pool_name!r} -> {linear_name!r} does not reproduce the model's logits from the "
                      "feature map (the forward does more than pool and project)")
    at = next(j for j, e in enumerate(events) if e is leaves[i])
    # the outermost module whose output is the feature map finished last among them (hooks fire on exit)
    target = next((e[0] for e in reversed(events[:at]) if e[3] is features), None)
    return CamHead(pool, pool_name, linear_name, target or f"input of {pool_name}", weight, bias,
                   tuple(features.shape[1:]))


def _global_average(module: Any) -> bool:
    from torch import nn

    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        return size in (1, (1, 1), [1, 1])
    return False


@contextlib.contextmanager
def with_features(module: Any, head: CamHead) -> Iterator[Any]:
    """A module that returns ``(logits, feature map entering the pooling)``: what convert exports with
    ``--explain cam``. The feature map is taken by a forward pre-hook on the pooling module, so the user's own
    forward runs unchanged; the hook is removed on leaving (the source model is run again for parity)."""
    from torch import nn

    seen: list = []

    def keep(_module: Any, args: tuple) -> None:
        seen[:] = [args[0]]

    class WithFeatures(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = module

        def forward(self, x):
            logits = self.model(x)
            return logits, seen[-1]

    handle = head.pool.register_forward_pre_hook(keep)
    try:
        yield WithFeatures().eval()
    finally:
        handle.remove()
        seen.clear()


@dataclass
class SaliencyReference:
    """FP32's class and class activation map on every verdict case (at the feature map's resolution: 49 floats a
    case for the shipped CNN), against which each candidate's map of the same class is judged
    (:func:`edgemed.gate.saliency_drift.judge_saliency`) when the gauge measures it."""

    input_name: str
    output_name: str
    explainer: Any  # edgemed.explain.saliency.CamExplainer or ReciproExplainer
    cases: list[tuple[int, np.ndarray]]

    @classmethod
    def build(cls, engine: Any, verdict: Any, input_name: str, output_name: str, explainer: Any
              ) -> SaliencyReference:
        """``explainer``: the method's run-time explainer (``model_map``, ``input_map``), as the artifacts' own."""
        cases = []
        for x in verdict.inputs():
            outputs = engine.infer({input_name: x})
            index = int(np.argmax(outputs[output_name][0]))
            cases.append((index, explainer.model_map(outputs, index)))
        return cls(input_name, output_name, explainer, cases)

    def judge(self, engine: Any, verdict: Any) -> Any:
        """The saliency-drift term of one candidate engine on the verdict cases."""
        from edgemed.explain.saliency import to_frame
        from edgemed.gate.saliency_drift import judge_saliency

        hw = self.explainer.input_hw
        name = engine.inputs[0].name

        def pairs():
            for (index, reference), x in zip(self.cases, verdict.inputs()):
                yield to_frame(reference, hw, []), self.explainer.input_map(engine.infer({name: x}), index)

        return judge_saliency(pairs())


# The model-parameter randomisation test (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018): a map
# that survives randomising the weights it is computed from explains nothing about what the model learned. The
# last convolution before the pooling (the top of Adebayo's cascade below the head) is re-initialised, seeded, and
# the class maps of the trained and the randomised copy are compared case by case, the trained model's class, the
# same head weights. Trained vs randomised rank correlations of sane maps sit near 0; a map still ranking pixels
# alike on average (mean Spearman >= 0.5) did not come from the learned features, and the report says so.
SANITY_CASES = 64  # verdict cases compared: the mean of 64 rank correlations is known to about +-0.05
SANITY_MAX_MEAN_RANK = 0.5


@dataclass
class SanityCheck:
    """The randomisation test's outcome, as recorded in report.json (``explain.sanity``)."""

    layer: str | None  # the convolution re-initialised; None: the model has none before the pooling (not run)
    cases: int
    mean_rank: float | None
    max_rank: float | None
    passed: bool | None

    def record(self) -> dict:
        return {"test": "model-parameter randomisation (Adebayo et al. 2018)", "randomised": self.layer,
                "cases": self.cases, "mean_rank_correlation": self.mean_rank, "max_rank_correlation": self.max_rank,
                "bound": f"mean < {SANITY_MAX_MEAN_RANK}", "passed": self.passed}

    def line(self) -> str:
        if self.layer is None:
            return "explain: randomisation check not run (no convolution before the pooling)"
        verdict = "passed" if self.passed else "FAILED: the maps barely depend on the learned weights"
        return (f"explain: randomisation check {verdict} ({self.layer!r} re-initialised: trained vs randomised maps "
                f"rank-correlate {self.mean_rank:.2f} on average, at most {self.max_rank:.2f}, over {self.cases} "
                f"cases; bound {SANITY_MAX_MEAN_RANK})")


def _maps(module: Any, head: CamHead, x: Any) -> tuple[np.ndarray, np.ndarray]:
    """Logits and the feature map entering the pooling of ``module`` (found by name: it may be a copy)."""
    import torch

    pool = dict(module.named_modules())[head.pool_name]
    seen: list = []
    handle = pool.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            logits = module(x)
    finally:
        handle.remove()
    return logits.float().numpy(), seen[-1].float().numpy()


def _last_convolution(module: Any, head: CamHead, x: Any) -> str | None:
    """The name of the last convolution that ran before the pooling (execution order, not declaration order)."""
    import torch
    from torch import nn

    ran: list[str] = []
    pool = dict(module.named_modules())[head.pool_name]
    handles = [m.register_forward_hook(lambda m, i, o, name=name: ran.append(name))
               for name, m in module.named_modules() if m is pool or isinstance(m, nn.modules.conv._ConvNd)]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    before = ran[:ran.index(head.pool_name)] if head.pool_name in ran else []
    return before[-1] if before else None


def randomisation_check(module: Any, head: CamHead, inputs: Any, cases: int = SANITY_CASES) -> SanityCheck:
    """Compare the class maps of ``module`` and of a copy whose last convolution before the pooling is
    re-initialised (seeded), on up to ``cases`` preprocessed inputs."""
    import copy
    import itertools

    import torch

    from edgemed.explain.saliency import class_activation_map
    from edgemed.gate.saliency_drift import rank_correlation

    batch = [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in itertools.islice(inputs, cases)]
    layer = _last_convolution(module, head, batch[0]) if batch else None
    if layer is None:
        return SanityCheck(None, 0, None, None, None)
    randomised = copy.deepcopy(module).eval()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        dict(randomised.named_modules())[layer].reset_parameters()
    ranks = []
    for x in batch:
        logits, trained = _maps(module, head, x)
        _, random = _maps(randomised, head, x)
        c = int(np.argmax(logits[0]))
        ranks.append(rank_correlation(class_activation_map(trained[0], head.weight[c]),
                                      class_activation_map(random[0], head.weight[c])))
    mean = float(np.mean(ranks))
    return SanityCheck(layer, len(ranks), round(mean, 4), round(float(np.max(ranks)), 4), mean < SANITY_MAX_MEAN_RANK)
