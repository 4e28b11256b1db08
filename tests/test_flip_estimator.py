"""The gate's statistics on real images: the flip-rate bound covers counted flip rates, and a planted bad
artifact comes out uncertified on a few images, failed on many, and is never picked."""

from __future__ import annotations

import shutil

import msgspec
import numpy as np
import pytest

from edgemed import load
from edgemed.bundle import Bundle, file_record
from edgemed.errors import NoEligibleArtifact
from edgemed.gate.drift import compare, population_margins
from edgemed.gate.verdict import default_budget, judge
from edgemed.measures.margins import decision_scores
from edgemed.measures.stats import flip_rate_bound

from .conftest import SHARED
from .site_images import breast_images


@pytest.fixture(scope="module")
def population(cnn_bundle, breastmnist, busi):
    """4,780 real 28x28 images (all of BreastMNIST and 4,000 BUSI crops) through the shipped classifier's
    preprocessing, and its FP32 logits on them."""
    images = breast_images(breastmnist, busi)
    with load(cnn_bundle) as pipe:
        inputs = np.concatenate([pipe.prepare(im).tensor for im in images])
        import onnxruntime as ort

        session = ort.InferenceSession(str(cnn_bundle / "model.onnx"), providers=["CPUExecutionProvider"])
        logits = np.concatenate([session.run(None, {"input": inputs[i:i + 512]})[0] for i in range(0, len(inputs),
                                                                                                     512)])
    return inputs, logits


def _int8_logits(cnn_bundle, inputs, tmp):
    """A plain full INT8 quantization (no fallback): a real quantization error that flips some diagnoses."""
    import onnxruntime as ort

    from edgemed.converters.ort_quantize import preprocess_for_quantization, quantize_int8
    from edgemed.datasets import ImageSet

    b = Bundle.open(cnn_bundle)
    prepared = preprocess_for_quantization(cnn_bundle / "model.onnx", tmp / "prep.onnx")
    quantize_int8(prepared, tmp / "q.onnx", ImageSet.open(SHARED / "breastmnist.npz", key="train_images").subset(128),
                  b.preprocessor(), "input")
    session = ort.InferenceSession(str(tmp / "q.onnx"), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": inputs[i:i + 512]})[0] for i in range(0, len(inputs), 512)])


def _shifts(reference, candidate):
    ref, cand = decision_scores(reference, "logits"), decision_scores(candidate, "logits")
    top, rows = ref.argmax(1), np.arange(len(ref))
    others = cand.copy()
    others[rows, top] = -np.inf
    margin = np.sort(ref, 1)[:, -1] - np.sort(ref, 1)[:, -2]
    return (cand[rows, top] - others.max(1)) - margin, margin, float(np.mean(cand.argmax(1) != top))


def test_the_flip_rate_bound_covers_counted_flip_rates(population, cnn_bundle, tmp_path):
    """Real INT8 and planted noise: from 150 verdict cases and 1,000 FP32 margins, the 95% upper bound is at or
    above the flip rate counted on all 4,780 images in at least 95% of resampled trials, and informative."""
    inputs, logits = population
    rng = np.random.default_rng(1)
    candidates = {"int8": _int8_logits(cnn_bundle, inputs, tmp_path),
                  "noise": logits + rng.normal(0, 0.5, logits.shape)}
    covered = trials = 0
    for name, cand in candidates.items():
        shifts, margins, counted = _shifts(logits, cand)
        assert 0.001 < counted < 0.1, (name, counted)  # a rate a few hundred images cannot count to certainty
        bounds = []
        for _ in range(40):
            verdict = rng.choice(len(logits), 150, replace=False)
            sample = rng.choice(len(logits), 1000, replace=False)
            bounds.append(flip_rate_bound(margins[sample], shifts[verdict], resamples=200)[1])
        covered += sum(b >= counted for b in bounds)
        trials += len(bounds)
        assert np.median(bounds) < 4 * counted, (name, counted, np.median(bounds))  # tighter than counting
    assert covered / trials >= 0.95, covered / trials


def _noisy_copy(src, dst, scale: float, seed: int):
    """The FP32 model with noise planted on its last layer's weights: a stand-in for a bad INT8 artifact."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    gemm = [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul")][-1]
    inits = {i.name: i for i in model.graph.initializer}
    weight = inits[gemm.input[1]]
    w = numpy_helper.to_array(weight)
    noisy = w + np.random.default_rng(seed).normal(0, scale * float(np.abs(w).mean()), w.shape).astype(w.dtype)
    weight.CopyFrom(numpy_helper.from_array(noisy, weight.name))
    onnx.save(model, str(dst))


def _outputs(path, inputs):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": inputs[i:i + 512]})[0] for i in range(0, len(inputs), 512)])


def test_a_planted_bad_artifact_is_uncertified_on_16_images_failed_on_all_and_never_picked(population, cnn_bundle,
                                                                                          tmp_path):
    inputs, logits = population
    pop = population_margins(logits, "classification", "logits")
    budget = default_budget("classification")
    for scale in (0.6, 0.8, 1.0, 1.3, 1.7, 2.2):  # find noise that flips ~5% of the real images
        _noisy_copy(cnn_bundle / "model.onnx", tmp_path / "bad.onnx", scale, seed=3)
        bad = _outputs(tmp_path / "bad.onnx", inputs)
        if np.mean(bad.argmax(1) != logits.argmax(1)) >= 0.04:
            break
    flips = float(np.mean(bad.argmax(1) != logits.argmax(1)))
    assert 0.03 <= flips <= 0.12, flips
    few = np.flatnonzero(bad.argmax(1) == logits.argmax(1))[:16]  # 16 images on which it happens to agree
    on_16 = judge(compare(logits[few], bad[few], "classification"), budget, "16 images", pop)
    assert on_16.verdict == "uncertified" and on_16.needed_cases, on_16  # agreement 1.0, yet never passed
    on_all = judge(compare(logits, bad, "classification"), budget, "all images", pop)
    assert on_all.verdict == "failed", on_all

    faithful = _outputs(cnn_bundle / "model.onnx", inputs)  # the FP32 model itself, through the same gate
    assert judge(compare(logits, faithful, "classification"), budget, "all images", pop).verdict == "passed"

    # Inside a bundle: neither verdict is ever selected, whatever the device word or speed.
    for verdict, name in ((on_16, "uncertified"), (on_all, "failed")):
        bundle = tmp_path / name
        shutil.copytree(cnn_bundle, bundle)
        shutil.copy(tmp_path / "bad.onnx", bundle / "model.int8.onnx")
        manifest = msgspec.to_builtins(Bundle.open(cnn_bundle).manifest)
        rec = msgspec.to_builtins(file_record(bundle, "model.int8.onnx"))
        manifest["artifacts"].append({**manifest["artifacts"][0], **rec, "precision": "int8",
                                      "drift": msgspec.to_builtins(verdict)})
        import json

        (bundle / "edgemed.json").write_text(json.dumps(manifest))
        for device in ("cpu", "auto"):
            with load(bundle, device=device) as pipe:
                assert pipe.artifact.precision == "fp32", (name, device)
        with pytest.raises(NoEligibleArtifact, match=f"onnxruntime/int8 \\({name}\\).*--accept {name}"):
            load(bundle, backend="onnxruntime", precision="int8")
        with load(bundle, backend="onnxruntime", precision="int8", accept=name) as pipe:
            assert pipe.artifact.precision == "int8" and "ACCEPTED" in pipe.describe()["reason"]


def _class_mix(labels, flippy, share, n, rng):
    """``n`` case indices where the class ``flippy`` makes up ``share`` of the cases (another mix than the data's)."""
    mine, other = np.flatnonzero(labels == flippy), np.flatnonzero(labels != flippy)
    k = int(round(share * n))
    return np.concatenate([rng.choice(mine, k, replace=False), rng.choice(other, n - k, replace=False)])


def test_flips_hidden_in_one_class_never_pass_on_another_class_mix(population, cnn_bundle, tmp_path):
    """The wrong pass of issue 18 in kind: a real INT8 classifier whose flips concentrate in one class, verdict data
    holding that class less often than the test data: the default budget (with the worst class) never passes it,
    and the worst class's bound covers the agreement of any class mix."""
    from edgemed.measures.margins import Margins

    inputs, logits = population
    cand = _int8_logits(cnn_bundle, inputs, tmp_path)
    fp32_class = logits.argmax(1)
    flips = cand.argmax(1) != fp32_class
    rates = {c: float(flips[fp32_class == c].mean()) for c in np.unique(fp32_class)}
    flippy = max(rates, key=rates.get)
    assert rates[flippy] > 2 * min(rates.values()) and rates[flippy] > 0.005, rates  # concentrated in one class
    pop = population_margins(logits, "classification", "logits")
    assert isinstance(pop["agreement"], Margins)
    budget = default_budget("classification")
    rng = np.random.default_rng(7)
    share = float((fp32_class == flippy).mean())
    passed = covered = trials = 0
    for _ in range(15):  # 45 coverage checks
        verdict = _class_mix(fp32_class, flippy, share / 3, 1500, rng)  # the flippy class a third as common
        record = judge(compare(logits[verdict], cand[verdict], "classification"), budget, "verdict", pop)
        passed += record.verdict == "passed"
        worst_low = record.metrics["class_agreement"].low
        for deployment_share in (share, 2 * share, 0.5):  # the data's own mix, the flippy class twice as common, even
            weights = np.where(fp32_class == flippy, deployment_share / share, (1 - deployment_share) / (1 - share))
            deployed = 1.0 - float(np.average(flips, weights=weights))
            covered += worst_low <= deployed
            trials += 1
    assert passed == 0
    assert covered / trials >= 0.95, covered / trials


def test_margin_bounds_never_claim_more_than_the_cases_resolve(population, cnn_bundle, tmp_path):
    """A bound of 1.0, or equal to the counted agreement, claims certainty the cases cannot give (issue 18)."""
    from edgemed.measures.stats import count_floor

    inputs, logits = population
    pop = population_margins(logits, "classification", "logits")
    rng = np.random.default_rng(3)
    for n in (200, 808):  # a candidate identical to FP32: every margin shift 0, the margin model's rate 0
        idx = rng.choice(len(logits), n, replace=False)
        est = judge(compare(logits[idx], logits[idx], "classification"), default_budget("classification"), "",
                    pop).metrics["agreement"]
        assert est.value == 1.0 and est.low < 1.0 and est.low <= 1.0 - count_floor(0, n) + 1e-12
