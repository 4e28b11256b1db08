"""Regressions for what a new user hit with the README in hand: lost outputs, misleading figures, unclear errors,
inconsistent argument checks. Each test names the report item it holds to."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from edgemed import load
from edgemed.errors import EdgemedError, InputError, NoEligibleArtifact, OptionError, PipelineClosed
from edgemed.samples import samples_dir, shipped_model

from .conftest import DICOM
from .test_cli import assert_one_line_error, edgemed

# --- item 4: predict --out never overwrites -------------------------------------------------------

def test_predict_out_writes_one_set_of_files_per_frame_with_unique_names(unet_bundle, cnn_bundle, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    src = sorted(samples_dir("busi").glob("*.png"))
    Image.open(src[0]).save(a / "img000.png")
    Image.open(src[1]).save(b / "img000.png")
    np.save(tmp_path / "volume.npy", np.stack([np.asarray(Image.open(s).convert("L").resize((64, 64)))
                                               for s in src[:4]]))
    out = tmp_path / "out"
    proc = edgemed("predict", unet_bundle, DICOM / "examples_ybr_color.dcm", a / "img000.png", b / "img000.png",
                   tmp_path / "volume.npy", "--out", out, "--json", check=True)
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 30 + 2 + 4
    written = [p for r in rows for p in r["written"]]
    assert len(written) == len(set(written)) == 3 * len(rows)  # mask, overlay and JSON per frame, none shared
    # and, for the DICOM source, its SR and SC (no SEG: a multi-frame source without a frame of reference)
    dicom = sorted(p.name for p in out.glob("*.dcm"))
    assert dicom == ["examples_ybr_color.sc.dcm", "examples_ybr_color.sr.dcm"]
    assert "SEG not written" in proc.stderr
    assert len(list(out.iterdir())) == len(written) + len(dicom)
    for r in rows:  # each frame's mask file holds that frame's own mask
        mask = np.asarray(Image.open(next(p for p in r["written"] if p.endswith("_mask.png"))))
        assert int((mask > 0).sum()) == r["areas_px"]["lesion"], r["input"]
    classified = edgemed("predict", cnn_bundle, a, "--out", tmp_path / "cls", check=True)
    assert (tmp_path / "cls" / "img000.json").is_file() and "files written" in classified.stderr


# --- item 9: point-of-care and remote figures that agree with each other ---------------------------

def test_stream_figures_add_up_and_remote_runs_what_it_was_asked(cnn_bundle):
    from edgemed.benchmarks.run import run_bench

    report = run_bench(cnn_bundle, scenario="point-of-care", fps=60, duration=2, runs=25, warmup=2)
    p = report["artifacts"][0]["point_of_care"]
    assert p["achieved_fps"] <= 60 * 1.05 and "throughput_fps" not in p["latency"]
    assert abs(p["stage_p50_sum_ms"] - p["latency"]["p50_ms"]) < 0.5 * p["latency"]["p50_ms"] + 0.5, p
    assert set(p["stage_p50_ms"]) >= {"queue_wait", "handoff_wait", "delivery_wait", "infer"}
    remote = run_bench(cnn_bundle, scenario="remote", runs=25, warmup=2)
    assert remote["artifacts"][0]["remote"]["latency_1_thread"]["runs"] == 25


# --- item 10: report ------------------------------------------------------------------------------

def test_report_threshold_must_be_positive(tmp_path):
    proc = edgemed("report", "--history", tmp_path / "none.sqlite", "--threshold", "-1")
    assert proc.returncode == 2 and "-1" in proc.stderr and "Traceback" not in proc.stderr


def test_runs_on_other_data_are_not_compared_and_regressions_read_as_text(cnn_bundle, tmp_path, breastmnist):
    from edgemed.benchmarks.history import History
    from edgemed.benchmarks.report import html_report, regressions
    from edgemed.benchmarks.run import history_rows, run_bench

    np.savez(tmp_path / "small.npz", images=breastmnist["test_images"][:10])
    store = History(tmp_path / "h.sqlite")
    store.append(history_rows(run_bench(cnn_bundle, runs=20, warmup=2)))
    other = run_bench(cnn_bundle, data=tmp_path / "small.npz", runs=20, warmup=2)
    for a in other["artifacts"]:  # three times slower, but on other data: another series, not a regression
        for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"):
            a["latency"]["end_to_end"][k] *= 3
    store.append(history_rows(other))
    runs = store.runs()
    assert not regressions(runs, 0.1)
    slower = json.loads(json.dumps(runs[-1]))
    slower["record"]["latency"]["end_to_end"]["p50_ms"] *= 2
    found = regressions(runs + [slower], 0.1)
    assert len(found) == 1 and "small.npz" in found[0]["workload"]
    page = html_report(runs + [slower], found)
    assert "p50" in page and "{&#x27;" not in page and "{'" not in page  # a sentence, not an escaped dict


# --- item 11: one accurate line -------------------------------------------------------------------

def test_a_zoo_unet_at_a_size_it_cannot_take_names_the_rule(tmp_path):
    weights, card = shipped_model("unet_busi")
    proc = edgemed("convert", weights, "-o", tmp_path / "b", "--task", "segmentation", "--input-shape", "1x1x100x130",
                   "--arch", "unet", "--arch-args", json.dumps(card["arch_args"]))
    multiple = 2 ** (card["arch_args"].get("depth", 4) - 1)  # each pooling halves the sides: 16 at depth 5
    assert_one_line_error(proc, f"needs sides that are multiples of {multiple}; use e.g. --input-shape")


def test_a_state_dict_mismatch_says_what_differs(tmp_path):
    weights, card = shipped_model("unet_busi")
    proc = edgemed("convert", weights, "-o", tmp_path / "b", "--task", "segmentation", "--input-shape", "1x1x128x128",
                   "--arch", "unet", "--arch-args", json.dumps({**card["arch_args"], "base": 8}))
    assert_one_line_error(proc, "down.0.0.weight checkpoint [16, 1, 3, 3] vs model [8, 1, 3, 3]")


def test_a_wrong_channel_count_in_torchscript_gives_torch_s_own_reason(tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3)).eval()), tmp_path / "m.pt")
    proc = edgemed("convert", tmp_path / "m.pt", "-o", tmp_path / "b", "--task", "segmentation", "--input-shape",
                   "1x3x28x28")
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgemed: error:")]
    assert proc.returncode == 2 and len(errors) == 1 and proc.stderr.strip().endswith(errors[0])  # after progress
    assert "expected input[1, 3, 28, 28] to have 1 channels, but got 3" in errors[0]


def test_predict_on_a_folder_runs_its_images(cnn_bundle):
    proc = edgemed("predict", cnn_bundle, samples_dir("breastmnist"), check=True)
    assert len(proc.stdout.splitlines()) == 8


def test_class_labels_for_a_segmenter_say_masks_are_needed(unet_bundle, tmp_path):
    (tmp_path / "labels.csv").write_text("file,label\nbusi_benign_147.png,2\n")
    from edgemed.benchmarks.run import run_bench

    with pytest.raises(InputError, match="cannot grade a segmenter, which is compared with masks"):
        run_bench(unet_bundle, data=samples_dir("busi"), labels=tmp_path / "labels.csv", runs=10, warmup=0)


def test_a_closed_pipeline_and_a_bare_array_to_infer_are_clear_errors(cnn_bundle):
    pipe = load(cnn_bundle)
    x = pipe.bundle.reference()["inputs"][:1]
    with pytest.raises(InputError, match="engine.infer takes a dict of input name -> array, got a ndarray"):
        pipe.engine.infer(x)
    pipe.close()
    with pytest.raises(PipelineClosed, match="the pipeline is closed"):
        pipe.predict(np.zeros((28, 28), np.uint8))


def test_bench_npz_key_option_exists_where_the_error_points(cnn_bundle, tmp_path, breastmnist):
    np.savez(tmp_path / "d.npz", frames=breastmnist["test_images"][:12])
    proc = edgemed("bench", cnn_bundle, "--data", tmp_path / "d.npz", "--runs", 10, "--no-history")
    assert_one_line_error(proc, "--data-key for bench")
    edgemed("bench", cnn_bundle, "--data", tmp_path / "d.npz", "--data-key", "frames", "--runs", 10, "--warmup", 1,
            "--no-history", check=True)


# --- item 12: arguments checked the same way ------------------------------------------------------

def test_arguments_are_checked_alike(cnn_bundle):
    with pytest.raises(OptionError, match="threads=-1 is not a thread count"):
        load(cnn_bundle, threads=-1)
    with pytest.raises(OptionError, match="unknown backend 'foo'"):
        load(cnn_bundle, backend="foo")
    with pytest.raises(NoEligibleArtifact, match="no certified .* artifact for onnxruntime/int8"):
        load(cnn_bundle, backend="onnxruntime", precision="int8")
    with load(cnn_bundle, device="CPU") as pipe:  # device words are not case-sensitive
        assert pipe.profile.name == "x86-cpu" or pipe.profile.name == "arm64-cpu"


def test_an_rgba_array_is_read_as_its_png_is(cnn_bundle, tmp_path):
    rgb = np.asarray(Image.open(sorted(samples_dir("busi").glob("*.png"))[0]).convert("RGB"))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "x.png")
    with load(cnn_bundle) as pipe:
        from_file = pipe.predict(tmp_path / "x.png").probabilities
        np.testing.assert_array_equal(pipe.predict(rgba).probabilities, from_file)


def test_the_dtype_rule_uint8_resizes_as_8_bit_other_dtypes_in_float(unet_bundle, busi):
    """Documented: uint8 frames are resized as 8-bit images (rounded, as torchvision does with PIL images),
    every other dtype in float32 (unrounded), so the same picture in two dtypes may differ at a few boundary
    pixels; each matches Pillow in its own mode."""
    frame = busi["images"][400]
    with load(unet_bundle) as pipe:
        x8 = pipe.prepare(frame).tensor
        x16 = pipe.prepare(frame.astype(np.uint16)).tensor
    want8 = np.asarray(Image.fromarray(frame).resize((128, 128), Image.Resampling.BILINEAR), np.float32)
    want16 = np.asarray(Image.fromarray(frame.astype(np.float32), "F").resize((128, 128),
                                                                               Image.Resampling.BILINEAR))
    for x, want in ((x8, want8), (x16, want16)):  # the spec is resize then minmax: compare after minmax
        np.testing.assert_allclose(x[0, 0], (want - want.min()) / (want.max() - want.min()), atol=1e-6)


def test_convert_options_fail_before_any_work(tmp_path):
    from edgemed.converters.convert import convert

    weights, _ = shipped_model("cnn_breastmnist")
    with pytest.raises(EdgemedError, match="--calib-count 0 must be a whole number >= 1"):
        convert(weights, tmp_path / "b", task="classification", input_shape=(1, 1, 28, 28), calib_count=0)
    assert not (tmp_path / "b").exists()

