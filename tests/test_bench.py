"""edgemed bench and report: every artifact side by side, honest latency, accuracy, history, regressions."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgemed.benchmarks.history import History
from edgemed.benchmarks.report import html_report, regressions
from edgemed.benchmarks.run import history_rows, run_bench
from edgemed.errors import EdgemedError
from edgemed.metrics import auroc, hd95

from .conftest import convert_shipped
from .test_cli import edgemed


@pytest.fixture(scope="module")
def unet_all(tmp_path_factory):
    from edgemed.samples import calibration_set

    return convert_shipped("unet_busi", tmp_path_factory.mktemp("b") / "unet_all", targets=("onnx", "openvino"),
                           precisions=("fp32", "int8"), calib=calibration_set("segmentation"))


@pytest.fixture(scope="module")
def busi_test_npz(tmp_path_factory, busi):
    test = np.where(busi["split"] == "test")[0][:24]
    path = tmp_path_factory.mktemp("d") / "busi_test24.npz"
    np.savez(path, images=busi["images"][test], masks=busi["masks"][test])
    return path


def test_all_artifacts_both_scenarios_with_ground_truth(unet_all, busi_test_npz, tmp_path):
    poc = run_bench(unet_all, all_artifacts=True, scenario="point-of-care", data=busi_test_npz, runs=30,
                    warmup=5, duration=2.0)
    rows = {(a["backend"], a["precision"]): a for a in poc["artifacts"]}
    assert set(rows) == {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8")}
    for a in poc["artifacts"]:
        if a["verdict"] != "passed":
            assert "never selected" in a["skipped"]
            continue
        lesion = a["accuracy"]["per_class"]["lesion"]
        assert 0.3 < lesion["dice"] <= 1 and lesion["hd95_px"] is not None
        p = a["point_of_care"]
        assert p["frames"] == 60 and p["processed"] + p["dropped"] == 60
        assert a["drift_on_data"]["cases"] == 24 and len(a["dice_per_case"]) == 24
    remote = run_bench(unet_all, scenario="remote", data=busi_test_npz, runs=20, warmup=2)
    r = remote["artifacts"][0]["remote"]
    assert r["cold_start_s"] > 0 and r["peak_rss_mb"] > 10 and r["bundle_mb"] > 0
    assert r["energy"]["source"]  # a figure with its source, or "not available" with a reason
    if r["energy"]["source"] == "not available":
        assert "reason" in r["energy"]


def test_shipped_unet_streams_30_fps_without_deadline_misses(unet_bundle, tmp_path):
    """The shipped U-Net is sized for point-of-care on these 2-core machines (end to end, batch 1).

    Measured the way scanner software runs it: a process of its own (not pytest's, which by now
    holds the thread pools of every engine earlier tests created).
    """
    edgemed("bench", unet_bundle, "--scenario", "point-of-care", "--fps", 30, "--duration", 5, "--runs", 20,
            "--warmup", 5, "--no-history", "--json", tmp_path / "poc.json", check=True)
    (art,) = json.loads((tmp_path / "poc.json").read_text())["artifacts"]
    result = art["point_of_care"]
    assert result["frames"] == 150 and result["dropped"] == 0 and result["deadline_misses"] == 0, result


def test_classifier_accuracy_against_labels(cnn_bundle, tmp_path, breastmnist):
    np.savez(tmp_path / "t.npz", images=breastmnist["test_images"], labels=breastmnist["test_labels"])
    report = run_bench(cnn_bundle, data=tmp_path / "t.npz", runs=20, warmup=2)
    acc = report["artifacts"][0]["accuracy"]
    assert acc["cases"] == 156 and 0.8 <= acc["accuracy"] <= 1
    for cls in ("malignant", "benign_or_normal"):
        m = acc["per_class"][cls]
        assert 0 <= m["sensitivity"] <= 1 and 0 <= m["specificity"] <= 1 and 0.5 < m["auroc"] <= 1


def test_auroc_and_hd95_against_brute_force():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 60).astype(bool)
    scores = np.round(rng.random(60) + truth * 0.4, 1)  # ties on purpose
    pairs = [(p > n) + 0.5 * (p == n) for p in scores[truth] for n in scores[~truth]]
    assert auroc(truth, scores) == pytest.approx(np.mean(pairs))
    a = np.zeros((40, 40), np.uint8)
    b = np.zeros((40, 40), np.uint8)
    a[5:20, 5:20], b[10:30, 8:25] = 1, 1
    from scipy import ndimage

    ea = np.argwhere(a ^ ndimage.binary_erosion(a))
    eb = np.argwhere(b ^ ndimage.binary_erosion(b))
    d = np.sqrt(((ea[:, None, :] - eb[None, :, :]) ** 2).sum(-1))
    want = np.percentile(np.concatenate([d.min(1), d.min(0)]), 95)
    assert hd95(a, b) == pytest.approx(want)


def test_history_report_and_regression_gate_both_ways(cnn_bundle, tmp_path):
    db = tmp_path / "h.sqlite"
    for _ in range(2):
        edgemed("bench", cnn_bundle, "--runs", 20, "--warmup", 2, "--history", db, check=True)
    ok = edgemed("report", "--history", db, "--threshold", "20", "--fail-on-regression", "--html", tmp_path / "r.html")
    assert ok.returncode == 0, ok.stderr
    assert "no regressions" in ok.stdout and (tmp_path / "r.html").is_file()
    # A later run that is 3x slower: the stored record of a real run, its latency scaled (fault injection).
    store = History(db)
    runs = store.runs()
    slow = dict(runs[-1])
    record = json.loads(json.dumps(slow["record"]))
    for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"):
        record["latency"]["end_to_end"][k] *= 3
    store.append([{**slow, "record": record}])
    store.close()
    bad = edgemed("report", "--history", db, "--fail-on-regression")
    assert bad.returncode == 1 and "REGRESSIONS" in bad.stdout and "+" in bad.stdout
    assert regressions(History(db).runs(), 0.10)


def test_corrupt_history_is_refused_not_emptied(tmp_path):
    db = tmp_path / "h.sqlite"
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    before = db.read_bytes()
    with pytest.raises(EdgemedError, match="corrupt"):
        History(db)
    assert db.read_bytes() == before


def test_history_survives_a_killed_bench(cnn_bundle, tmp_path):
    db = tmp_path / "h.sqlite"
    edgemed("bench", cnn_bundle, "--runs", 20, "--warmup", 2, "--history", db, check=True)
    n = len(History(db).runs())
    proc = subprocess.Popen([sys.executable, "-m", "edgemed.cli", "bench", str(cnn_bundle), "--runs", "200000",
                             "--history", str(db)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(4)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(History(db).runs()) == n


def test_html_report_renders_in_headless_chromium(unet_all, busi_test_npz, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    report = run_bench(unet_all, all_artifacts=True, data=busi_test_npz, runs=20, warmup=2)
    store = History(tmp_path / "h.sqlite")
    store.append(history_rows(report))
    page = tmp_path / "r.html"
    page.write_text(html_report(store.runs(), []))
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1000,1400",
                    page.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"))
    assert img.std() > 10 and (img < 128).mean() > 0.005  # text, plots and overlays drew something
    assert "Latency per artifact" in page.read_text() and "data:image/png;base64" in page.read_text()



_BARE = """
import sys, numpy as np, onnxruntime as ort
x = np.load(sys.argv[2])
o = ort.SessionOptions()
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
for _ in range(300):
    s.run(None, {"input": x})
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""
_EDGEMED = """
import sys, numpy as np, edgemed
frame = np.load(sys.argv[2])
pipe = edgemed.load(sys.argv[1])
for _ in range(300):
    pipe.predict(frame)
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def test_runtime_peak_rss_within_1_2x_of_a_bare_session(unet_bundle, busi, tmp_path):
    """Peak RSS (VmHWM: ru_maxrss would carry pytest's own peak across exec) of 300 predictions."""
    frame = busi["images"][400]
    np.save(tmp_path / "frame.npy", frame)
    with __import__("edgemed").load(unet_bundle) as pipe:
        np.save(tmp_path / "x.npy", pipe.prepare(frame).tensor)

    def peak(code, arg, data):
        out = subprocess.run([sys.executable, "-c", code, str(arg), str(data)], capture_output=True, text=True,
                             check=True, timeout=300)
        return int(out.stdout.strip().splitlines()[-1]) / 1024

    bare = peak(_BARE, unet_bundle / "model.onnx", tmp_path / "x.npy")
    ours = peak(_EDGEMED, unet_bundle, tmp_path / "frame.npy")
    assert ours <= 1.2 * bare, f"edgemed peak RSS {ours:.0f} MB vs bare onnxruntime {bare:.0f} MB"
