"""The command line as users run it: real processes, exit codes, one-line errors, JSON output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from edgemed.samples import samples_dir, shipped_model

from .conftest import DICOM


def edgemed(*args, check=False):
    proc = subprocess.run([sys.executable, "-m", "edgemed.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc


def assert_one_line_error(proc, needle):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgemed: error:"), proc.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def test_predict_json_and_text(cnn_bundle):
    imgs = sorted(samples_dir("breastmnist").glob("*.png"))[:3]
    proc = edgemed("predict", cnn_bundle, *imgs, "--json", check=True)
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["input"] for r in rows] == [p.name for p in imgs]
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows)
    proc = edgemed("predict", cnn_bundle, DICOM / "examples_ybr_color.dcm", check=True)
    assert len(proc.stdout.splitlines()) == 30  # every frame of the multi-frame ultrasound clip


def test_bench_table_and_json(cnn_bundle, tmp_path):
    proc = edgemed("bench", cnn_bundle, "--runs", 30, "--warmup", 5, "--json", tmp_path / "b.json", "--history",
                   tmp_path / "h.sqlite", check=True)
    assert "raw ORT p50" in proc.stdout and "onnxruntime/fp32" in proc.stdout
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["schema"] == "edgemed-bench/2"
    (art,) = report["artifacts"]
    assert art["latency"]["end_to_end"]["runs"] == 30
    ref = art["drift_reference"]
    assert ref["verdict"] == "passed" and ref["cases"] == 8
    assert ref["metrics"]["agreement"]["value"] == 1.0 and ref["metrics"]["max_abs_diff"]["value"] <= 1e-4
    assert art["accuracy"]["cases"] == 8  # the shipped BreastMNIST samples with their labels


def test_verify(cnn_bundle):
    proc = edgemed("verify", cnn_bundle, check=True)
    lines = proc.stdout.strip().splitlines()
    assert "hashes ok" in lines[0] and lines[0].endswith("-> passed"), proc.stdout
    assert lines[1].strip().startswith("verdict passed, from conversion"), proc.stdout


def test_errors_are_one_line(cnn_bundle, tmp_path):
    weights, _ = shipped_model("cnn_breastmnist")
    assert_one_line_error(edgemed("convert", weights, "-o", tmp_path / "b", "--task", "classification",
                                  "--input-shape", "1x1x28x28"), "--arch")
    assert_one_line_error(edgemed("convert", weights, "-o", tmp_path / "b", "--task", "classification",
                                  "--input-shape", "28x28", "--arch", "cnn"), "--input-shape")
    assert not (tmp_path / "b").exists()
    bad = tmp_path / "bad.dcm"
    bad.write_bytes((DICOM / "CT_small.dcm").read_bytes()[:3000])
    assert_one_line_error(edgemed("predict", cnn_bundle, bad), "bad.dcm")
    tampered = tmp_path / "tampered"
    shutil.copytree(cnn_bundle, tampered)
    with open(tampered / "model.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    assert_one_line_error(edgemed("predict", tampered, bad), "model.onnx does not match its SHA-256")
    assert_one_line_error(edgemed("predict", cnn_bundle, bad, "--fs", "360"), "--fs/--units/--leads describe signals")
    assert_one_line_error(edgemed("bench", cnn_bundle, "--backend", "tensorrt"), "available: onnxruntime/fp32")


@pytest.mark.slow
def test_demo_runs_the_main_job(tmp_path):
    proc = edgemed("demo", "--out", tmp_path / "demo", "--runs", 20, check=True)
    assert "unet_busi" in proc.stdout and "cnn_breastmnist" in proc.stdout
    assert "det_busi" in proc.stdout and "ecg_rr" in proc.stdout
    assert "MIT-BIH record 213" in proc.stdout and "x real time" in proc.stdout
    assert "raw ORT p50 ms" in proc.stdout
    assert len(list((tmp_path / "demo" / "predictions").glob("*_overlay.png"))) == 8
    # Verdicts with their bounds and case counts; no "int8" artifact without an INT8 layer.
    assert "(>=" in proc.stdout and " cases " in proc.stdout
    from edgemed.bundle import Bundle

    for name in ("unet_busi", "cnn_breastmnist", "det_busi", "ecg_rr"):
        for art in Bundle.open(tmp_path / "demo" / name).artifacts:
            assert art.verdict in ("passed", "failed", "uncertified")
            if art.precision == "int8":
                assert art.build.quantized_layers.int8 > 0, art.file
