"""``convert --explain cam`` and ``r.saliency`` (issue 22), on the shipped BreastMNIST classifier and real images.

The map from each deployed engine (ONNX Runtime FP32, OpenVINO FP32) must rank the frame's pixels as a class
activation map computed by hand from the PyTorch module does: its feature map taken by a forward hook, its
Linear head's weights, the same ReLU and max-normalisation, and the same upsampling back onto the frame.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgemed.errors import BundleError, EdgemedError, OptionError
from edgemed.samples import shipped_model

from .blocked_imports import BLOCK_TORCH_ONNX
from .conftest import convert_shipped


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def _hand_cam(model, tensor: np.ndarray, geometry: list) -> tuple[np.ndarray, int]:
    """CAM of the predicted class from the PyTorch module: hook on ``features``, the head's weights, ReLU, divided
    by the maximum, then upsampled onto the frame as edgemed upsamples (edgemed.explain.saliency.to_frame)."""
    import torch

    from edgemed.explain.saliency import to_frame

    seen = {}
    handle = model.features.register_forward_hook(lambda m, i, o: seen.update(f=o.detach().numpy()[0].copy()))
    with torch.no_grad():
        logits = model(torch.from_numpy(tensor)).numpy()[0]
    handle.remove()
    index = int(np.argmax(logits))
    weight = model.head[2].weight.detach().numpy()[index]
    cam = np.maximum(np.einsum("k,khw->hw", weight, seen["f"]), 0.0)
    cam = cam / cam.max()
    return to_frame(cam.astype(np.float32), tensor.shape[2:], geometry), index


def _frames(breastmnist, busi) -> list[np.ndarray]:
    """Four BreastMNIST test images at the model's own 28x28 and four 256x256 BUSI frames (resized down: the map
    goes back through the recorded geometry), two of each class."""
    bm = [breastmnist["test_images"][i] for i in (np.flatnonzero(breastmnist["test_labels"] == 0)[:2].tolist()
                                                 + np.flatnonzero(breastmnist["test_labels"] == 1)[:2].tolist())]
    test = np.flatnonzero(busi["split"] == "test")
    us = [busi["images"][i] for i in (test[busi["labels"][test] == 2][:2].tolist()
                                      + test[busi["labels"][test] == 1][:2].tolist())]
    return bm + us


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_saliency_equals_hand_cam_from_the_torch_module(cnn_cam_bundle, torch_cnn, breastmnist, busi, backend):
    import edgemed

    manifest = json.loads((cnn_cam_bundle / "edgemed.json").read_text())
    assert manifest["explain"]["method"] == "cam"
    assert manifest["explain"]["target_layer"] == "features"
    with edgemed.load(cnn_cam_bundle, backend=backend, precision="fp32") as pipe:
        assert pipe.artifact.backend == backend
        frames = _frames(breastmnist, busi)
        results = [pipe.predict(frame) for frame in frames]  # maps read after later frames: no shared buffers
        for frame, r in zip(frames, results):
            prepared = pipe.prepare(frame)
            hand, index = _hand_cam(torch_cnn, prepared.tensor, prepared.geometry)
            assert r.index == index
            s = r.saliency
            assert s.shape == frame.shape and s.dtype == np.float32
            assert s.min() >= 0.0 and s.max() <= 1.0 and s.max() > 0.5
            assert hand.std() > 0
            rho = _spearman(s, hand)
            assert rho >= 0.99, f"{backend}: rank correlation {rho:.4f} with the hand-made CAM"
            assert r.saliency is s  # computed once, on first read


def test_bundle_without_explain_has_no_saliency(cnn_bundle):
    import edgemed

    with edgemed.load(cnn_bundle) as pipe:
        assert pipe.bundle.manifest.explain is None  # every bundle before issue 22 still loads
        assert pipe.predict(np.full((28, 28), 100, np.uint8)).saliency is None


def test_explain_refused_for_a_model_without_the_head(tmp_path):
    """The U-Net ends in a convolution: refused in one line naming the fix, and nothing is written."""
    out = tmp_path / "b"
    with pytest.raises(OptionError) as info:
        convert_shipped("unet_busi", out, task="classification", labels=("a", "b"), explain="cam")
    text = str(info.value)
    assert "\n" not in text and "--explain cam" in text and "Conv2d" in text and "global average pooling" in text
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(OptionError, match="explains image classifiers, not image segmentation"):
        convert_shipped("unet_busi", out, explain="cam")
    assert not out.exists()
    weights, card = shipped_model("unet_busi")
    shape = "x".join(map(str, card["input_shape"]))
    proc = subprocess.run([sys.executable, "-m", "edgemed.cli", "convert", str(weights), "-o", str(out), "--task",
                           "classification", "--labels", "a,b", "--input-shape", shape, "--arch", "unet",
                           "--arch-args", json.dumps(card["arch_args"]), "--explain", "cam"],
                          capture_output=True, text=True, timeout=300)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgemed: error:")]  # after the progress log
    assert proc.returncode == 2 and len(errors) == 1 and errors[0].startswith("edgemed: error: --explain cam:"), \
        proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.rstrip().endswith("or drop --explain")
    assert not out.exists()


def test_explanation_is_checked_at_load(cnn_cam_bundle, tmp_path):
    import shutil

    import edgemed

    bad = tmp_path / "b"
    shutil.copytree(cnn_cam_bundle, bad)
    manifest = json.loads((bad / "edgemed.json").read_text())
    manifest["explain"]["features_output"] = manifest["output"]["names"][0]
    (bad / "edgemed.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="explain.features_output"):
        edgemed.load(bad)
    manifest["explain"]["features_output"] = "nowhere"
    (bad / "edgemed.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="no output 'nowhere'"):
        edgemed.load(bad)
    for field, value, needle in (("method", "gradcam", "field explain.method"),
                                 ("target_layer", "", "field explain.target_layer"),
                                 ("head", None, "field explain.head")):
        broken = json.loads((cnn_cam_bundle / "edgemed.json").read_text())
        broken["explain"][field] = value
        (bad / "edgemed.json").write_text(json.dumps(broken))
        with pytest.raises(BundleError, match=needle):
            edgemed.load(bad)
    shutil.copy(cnn_cam_bundle / "edgemed.json", bad / "edgemed.json")
    with open(bad / manifest["explain"]["head"]["file"], "ab") as f:
        f.write(b"\0")
    with pytest.raises(EdgemedError):
        edgemed.load(bad)  # the head is hashed like every other bundle file


def test_saliency_path_imports_neither_torch_nor_onnx(cnn_cam_bundle):
    code = BLOCK_TORCH_ONNX + f"""
import numpy as np, edgemed
r = edgemed.load({str(cnn_cam_bundle)!r}).predict(np.full((64, 48), 100, np.uint8))
print(r.saliency.shape, sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx')))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(64, 48) []", out.stdout + out.stderr


def test_class_activation_map_rule():
    from edgemed.explain.saliency import class_activation_map

    features = np.stack([np.eye(3, dtype=np.float32), -np.ones((3, 3), np.float32)])
    cam = class_activation_map(features, np.array([2.0, 0.5], np.float32))
    assert cam.max() == 1.0 and cam.min() == 0.0 and cam[0, 0] == 1.0 and cam[0, 1] == 0.0
    # no positive evidence anywhere: all zeros, not a division by zero
    assert not class_activation_map(features, np.array([-1.0, 1.0], np.float32)).any()


def test_find_cam_head_refuses_other_endings():
    """Direct checks of the structure finder on small modules (no conversion): each refusal names what it found."""
    from torch import nn

    from edgemed.converters.explain import find_cam_head

    conv = nn.Conv2d(1, 4, 3, padding=1)
    flat = nn.Sequential(conv, nn.Flatten(), nn.Linear(4 * 8 * 8, 2)).eval()
    with pytest.raises(OptionError, match="follows Conv2d '0', not global average pooling"):
        find_cam_head(flat, (1, 1, 8, 8), "state_dict")
    two = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(OptionError, match="follows ReLU '4'"):
        find_cam_head(two.eval(), (1, 1, 8, 8), "state_dict")
    class Softmaxed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.pool, self.fc = conv, nn.AdaptiveAvgPool2d(1), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.pool(self.body(x)).flatten(1)).softmax(1)

    with pytest.raises(OptionError, match="changes the output of its last layer Linear 'fc'"):
        find_cam_head(Softmaxed().eval(), (1, 1, 8, 8), "state_dict")
    with pytest.raises(OptionError, match="a torchscript source cannot be inspected"):
        find_cam_head(flat, (1, 1, 8, 8), "torchscript")
    good = nn.Sequential(nn.Sequential(conv, nn.ReLU()), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
                         nn.Dropout(0.5), nn.Linear(4, 3)).eval()
    head = find_cam_head(good, (2, 1, 8, 8), "state_dict")
    assert (head.target_layer, head.pool_name, head.linear_name) == ("0", "1", "4")
    assert head.weight.shape == (3, 4) and head.feature_shape == (4, 8, 8)


def _input_maps(pipe, frames, classes=None, disturb=None):
    """Each frame's map at the model's input size, of ``classes`` (FP32's) where given, and the classes."""
    maps, picked = [], []
    for i, frame in enumerate(frames):
        outputs = pipe.infer(pipe.prepare(frame))
        if disturb is not None:
            outputs = disturb(outputs)
        index = int(np.argmax(outputs[pipe.output_name][0])) if classes is None else classes[i]
        picked.append(int(np.argmax(outputs[pipe.output_name][0])))
        maps.append(pipe.explainer.input_map(outputs, index))
    return maps, picked


def test_saliency_drift_term_passes_int8_and_fails_a_moved_map(cnn_cam_bundle, breastmnist):
    """ORT INT8 keeps FP32's maps on 60 real BreastMNIST test images; the same INT8 artifact with its feature maps
    rolled by half their width and height (every diagnosis unchanged: global pooling does not see the roll) fails
    the term on every figure."""
    import edgemed
    from edgemed.gate.saliency_drift import DEFAULT_SALIENCY_BUDGET, judge_saliency, with_saliency

    frames = list(breastmnist["test_images"][:60])
    with edgemed.load(cnn_cam_bundle, backend="onnxruntime", precision="fp32") as fp32:
        reference, classes = _input_maps(fp32, frames)
    with edgemed.load(cnn_cam_bundle, backend="onnxruntime", precision="int8", accept="uncertified") as int8:
        honest, honest_classes = _input_maps(int8, frames, classes)

        def roll(outputs):
            f = outputs["cam_features"]
            return {**outputs, "cam_features": np.roll(f, (f.shape[2] // 2, f.shape[3] // 2), axis=(2, 3))}

        moved, moved_classes = _input_maps(int8, frames, classes, roll)
    assert moved_classes == honest_classes  # the diagnosis is kept
    kept = judge_saliency(zip(reference, honest))
    assert kept.verdict == "passed", kept.missed
    assert all(kept.metrics[m].cases == 60 and kept.metrics[m].low >= bar for m, bar in DEFAULT_SALIENCY_BUDGET.items())
    broken = judge_saliency(zip(reference, moved))
    assert broken.verdict == "failed"
    assert len(broken.missed) == 3 and all(broken.metrics[m].high < bar for m, bar in DEFAULT_SALIENCY_BUDGET.items())
    # folded into the artifact's record, a moved map fails an artifact that kept every answer
    folded = with_saliency(int8.artifact.drift, broken)
    assert folded.verdict == "failed" and folded.metrics["saliency_rank"].value < 0
    assert sum("saliency drift: saliency_" in m for m in folded.missed) == 3


def test_convert_gates_every_candidate_on_saliency_drift(cnn_cam_bundle):
    """Convert measured the term on its verdict cases for every artifact it judged against the FP32 reference."""
    from edgemed.bundle import Bundle

    manifest = Bundle.open(cnn_cam_bundle).manifest
    for artifact in manifest.artifacts:
        figures = {k: v for k, v in artifact.drift.metrics.items() if k.startswith("saliency_")}
        if artifact.key == "onnxruntime/fp32":
            assert not figures  # the reference itself
            continue
        assert set(figures) == {"saliency_rank", "saliency_overlap", "saliency_pointing"}, artifact.key
        assert all(f.cases == artifact.drift.cases and f.low is not None for f in figures.values())
        assert not any("saliency" in m for m in artifact.drift.missed), artifact.drift.missed
    assert manifest.artifact("openvino", "fp32").drift.metrics["saliency_rank"].value == pytest.approx(1.0)


def test_saliency_drift_figures_on_known_maps():
    from edgemed.gate.saliency_drift import compare_maps, judge_saliency, rank_correlation

    ramp = np.arange(100, dtype=np.float32).reshape(10, 10) / 99
    assert compare_maps(ramp, ramp) == (pytest.approx(1.0), 1.0, True)
    rank, overlap, pointing = compare_maps(ramp, ramp[::-1, ::-1])
    assert rank == pytest.approx(-1.0) and overlap == 0.0 and not pointing
    zeros = np.zeros((10, 10), np.float32)
    assert rank_correlation(zeros, zeros) == 1.0 and rank_correlation(zeros, ramp) == 0.0
    assert judge_saliency([]).verdict == "uncertified"
    few = judge_saliency([(ramp, ramp)] * 5)  # perfect, but 5 cases cannot bound pointing at 0.9
    assert few.verdict == "uncertified" and few.metrics["saliency_pointing"].low < 0.9


def test_predict_out_writes_the_saliency_heat_map(cnn_cam_bundle, busi, tmp_path):
    """``edgemed predict --out`` on a real BUSI frame: STEM_saliency.png at the frame's size, the frame unchanged
    where the map is 0 and tinted where it is hot; the CLI's map is the Python API's."""
    from PIL import Image

    import edgemed
    from edgemed.io.saliency_overlay import heat_overlay

    frame = busi["images"][np.flatnonzero(busi["labels"] == 2)[0]]
    Image.fromarray(frame).save(tmp_path / "case.png")
    proc = subprocess.run([sys.executable, "-m", "edgemed.cli", "predict", str(cnn_cam_bundle),
                           str(tmp_path / "case.png"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    picture = np.asarray(Image.open(tmp_path / "out" / "case_saliency.png"))
    assert picture.shape == frame.shape + (3,)
    with edgemed.load(cnn_cam_bundle) as pipe:
        saliency = pipe.predict(frame).saliency
    expected = heat_overlay(frame, saliency)
    below_caption = (slice(16, None), slice(None))
    assert np.array_equal(picture[below_caption], expected[below_caption])
    cold, hot = saliency == 0, saliency > 0.8
    assert cold.any() and hot.any()
    grey = np.repeat(frame[:, :, None], 3, axis=2)
    assert np.array_equal(expected[cold], grey[cold]) and not np.array_equal(expected[hot], grey[hot])


def test_parity_certificate_survives_a_term_left_open_by_few_cases(cnn_cam_bundle):
    """OpenVINO FP32 passed by parity: a perfect map on 5 cases (open only for want of cases) keeps it passed; a
    moved map fails it."""
    from edgemed.bundle import Bundle
    from edgemed.gate.saliency_drift import judge_saliency, with_saliency

    record = Bundle.open(cnn_cam_bundle).manifest.artifact("openvino", "fp32").drift
    assert record.budget == "parity" and record.passed
    ramp = np.arange(100, dtype=np.float32).reshape(10, 10) / 99
    few = judge_saliency([(ramp, ramp)] * 5)
    assert few.verdict == "uncertified" and with_saliency(record, few).verdict == "passed"
    moved = judge_saliency([(ramp, ramp[::-1, ::-1])] * 5)
    assert moved.verdict == "failed" and with_saliency(record, moved).verdict == "failed"


def test_convert_records_the_randomisation_sanity_check(cnn_cam_bundle):
    """Adebayo et al.'s model-parameter randomisation at convert: the shipped CNN's last convolution re-initialised,
    its maps no longer rank the verdict cases' pixels as the trained model's do (mean Spearman near 0)."""
    sanity = json.loads((cnn_cam_bundle / "report.json").read_text())["explain"]["sanity"]
    assert sanity["randomised"] == "features.4.3" and sanity["cases"] >= 8
    assert sanity["passed"] is True and abs(sanity["mean_rank_correlation"]) < 0.3


def test_a_map_that_ignores_the_last_convolution_fails_the_sanity_check(breastmnist):
    """A model whose pooled features bypass its last convolution (multiplied by 0): randomising that convolution
    leaves every map as it was, on real BreastMNIST test images, and the check says the maps do not depend on it."""
    import torch
    from torch import nn

    from edgemed.converters.explain import find_cam_head, randomisation_check

    class Bypassed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
            self.pool, self.head = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 2)

        def forward(self, x):
            f = torch.relu(self.a(x))
            f = f + 0 * self.b(f)
            return self.head(self.pool(f).flatten(1))

    torch.manual_seed(0)
    model = Bypassed().eval()
    head = find_cam_head(model, (1, 1, 28, 28), "state_dict")
    frames = [(im[None, None] / 255.0).astype(np.float32) for im in breastmnist["test_images"][:16]]
    sanity = randomisation_check(model, head, iter(frames))
    assert sanity.layer == "b" and sanity.cases == 16
    assert sanity.passed is False and sanity.mean_rank > 0.99
    assert "FAILED" in sanity.line()


def test_report_shows_the_worst_saliency_drift_cases_side_by_side(cnn_cam_bundle, tmp_path):
    """Issue 22.4: bench judges each --explain artifact's saliency drift again on its data (here the bundle's own
    verdict images) and keeps the worst cases; the HTML report, rendered in headless Chromium, shows FP32's map
    beside the artifact's over the same frame, captioned with the case and its figures."""
    import shutil

    from edgemed.benchmarks.history import History
    from edgemed.benchmarks.report import html_report
    from edgemed.benchmarks.run import history_rows, run_bench

    report = run_bench(cnn_cam_bundle, all_artifacts=True, runs=5, warmup=1)
    rows = {(a["backend"], a["precision"]): a for a in report["artifacts"]}
    assert "worst_saliency" not in rows[("onnxruntime", "fp32")]  # the reference against itself shows nothing
    judged = {k: a for k, a in rows.items() if "worst_saliency" in a}
    assert set(judged) == {("openvino", "fp32"), ("onnxruntime", "int8"), ("openvino", "int8")}
    for a in judged.values():
        on_data = a["saliency_on_data"]
        assert on_data["cases"] == report["data"]["images"] > 0
        assert set(on_data["metrics"]) == {"saliency_rank", "saliency_overlap", "saliency_pointing"}
        ranks = [c["saliency_rank"] for c in a["worst_saliency"]]
        assert ranks == sorted(ranks) and len(ranks) <= 3  # worst first
        if ranks:  # the worst case shown is the worst there is: its rank is the lowest of all cases
            assert ranks[0] <= on_data["metrics"]["saliency_rank"]["value"]
        for c in a["worst_saliency"]:
            assert c["fp32_png"] != c["png"]  # shown only where the pictures differ
    assert all(judged[k]["worst_saliency"] for k in (("onnxruntime", "int8"), ("openvino", "int8")))
    for a in rows.values():  # bench: predict with and without the explanation, side by side (figures, not timed)
        cost = a["explanation_cost"]
        assert set(cost["p50_ms"]) == {"without explanation", "with explanation", "with the map read"}
        assert all(v > 0 for v in cost["p50_ms"].values()) and cost["runs"] == 5
        assert cost["with / without"] == pytest.approx(cost["p50_ms"]["with explanation"]
                                                       / cost["p50_ms"]["without explanation"], rel=1e-2)

    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("chromium is not installed (.ci/run installs it)")
    from .test_view import Browser

    store = History(tmp_path / "h.sqlite")
    store.append(history_rows(report))
    page = tmp_path / "r.html"
    page.write_text(html_report(store.runs(), []))
    browser = Browser(tmp_path)
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=page.as_uri())
        browser.until("document.readyState === 'complete'")
        shown = json.loads(browser.eval("""JSON.stringify((() => {
            const out = {text: '', figures: []};
            for (let e = document.getElementById('saliency').nextElementSibling; e && e.tagName !== 'H2';
                 e = e.nextElementSibling) {
              out.text += e.textContent + ' ';
              for (const f of (e.matches('figure') ? [e] : e.querySelectorAll('figure'))) out.figures.push({
                saliency: f.classList.contains('saliency'), caption: f.querySelector('figcaption').textContent,
                images: [...f.querySelectorAll('img')].filter(i => i.complete && i.naturalWidth > 0 &&
                                                               i.getBoundingClientRect().width > 0).length});
            }
            return out; })())"""))
    finally:
        browser.close()
    expected = [c for a in judged.values() for c in a["worst_saliency"]]
    assert len(shown["figures"]) == len(expected) >= 2
    for fig, case in zip(shown["figures"], expected):
        assert fig["saliency"] and fig["images"] == 2  # FP32's map and the artifact's, side by side
        assert fig["caption"].startswith(f"{case['name']}: saliency rank correlation {case['saliency_rank']:.4f}")
        assert "top-10% overlap" in fig["caption"] and "left FP32, right this artifact" in fig["caption"]
    assert "not findings" in shown["text"] and "gate at conversion" in shown["text"]
    assert "bench data" in shown["text"]
    assert shown["text"].count("without the explanation") == len(rows)  # every artifact's cost line
