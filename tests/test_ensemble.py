"""Ensembles (issue 23): the combined answer equals the by-hand combination of the members' FP32 outputs on real
images (BreastMNIST for two differently trained CNNs, BUSI for the U-Net), flipped inputs un-flipped; members of
another task or other labels are refused; a changed member file is refused at load.

The by-hand side opens each member bundle on its own (``edgemed.load``, ONNX Runtime FP32), runs the engine on the
preprocessed tensor and its flips with numpy, and combines with numpy: it shares no code with
:mod:`edgemed.ensemble` beyond the engines and the preprocessing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edgemed
import edgemed.samples
from edgemed.cli import main
from edgemed.ensemble import make_ensemble
from edgemed.errors import BundleError, OptionError
from edgemed.postprocess import segmentation_mask

FP32 = {"backend": "onnxruntime", "precision": "fp32"}


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _views(pipe, frame, flips: list[str]) -> list[np.ndarray]:
    """One member's raw FP32 output for the frame and each flip of its preprocessed tensor, un-flipped back
    (for maps) with numpy."""
    tensor = pipe.prepare(frame).tensor
    axes = {"none": (), "hflip": (3,), "vflip": (2,), "hvflip": (2, 3)}
    outs = []
    for view in ["none", *flips]:
        seen = np.ascontiguousarray(np.flip(tensor, axes[view])) if axes[view] else tensor
        out = pipe.engine.infer({pipe.input_name: seen})[pipe.output_name]
        outs.append(np.flip(out, axes[view]) if out.ndim == 4 and axes[view] else out)
    return outs


def _by_hand(outs_per_member: list[list[np.ndarray]], weights: list[float], combine: str, axis: int) -> np.ndarray:
    """Weighted combination along the class axis: logits (then softmax), probabilities, or one-hot votes."""
    total, acc = 0.0, 0.0
    for outs, w in zip(outs_per_member, weights):
        for out in outs:
            x = out.astype(np.float64)
            if combine == "mean-probabilities":
                x = _softmax(x, axis)
            elif combine == "vote":
                x = (np.arange(x.shape[axis]).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
                     == x.argmax(axis=axis, keepdims=True)).astype(np.float64)
            acc = acc + w * x
            total += w
    acc = acc / total
    return _softmax(acc, axis) if combine == "mean-logits" else acc


@pytest.mark.parametrize("combine", ["mean-logits", "mean-probabilities", "vote"])
def test_two_cnns_with_hflip_equal_the_by_hand_combination(combine, cnn_bundle, cnn_seed1, breastmnist, tmp_path):
    weights, flips = [2.0, 1.0], ["hflip"]
    ens = make_ensemble([cnn_bundle, cnn_seed1], tmp_path / "ens", combine=combine, weights=weights, tta=flips)
    members = [edgemed.load(b, **FP32) for b in (cnn_bundle, cnn_seed1)]
    frames = breastmnist["test_images"][:24]
    apart = 0.0
    with edgemed.load(ens, **FP32) as pipe:
        assert [m["artifact"] for m in pipe.describe()["members"]] == ["model.onnx", "model.onnx"]
        for frame in frames:
            r = pipe.predict(frame, members=True)
            want = _by_hand([_views(m, frame, flips) for m in members], weights, combine, axis=1)[0]
            np.testing.assert_allclose(r.probabilities, want, atol=1e-5)
            assert r.index == int(np.argmax(want)) and r.label == r.labels[r.index]
            own = [m.predict(frame) for m in members]
            for mine, theirs in zip(r.members, own):  # each member's own answer, as loading it alone gives
                np.testing.assert_allclose(mine.probabilities, theirs.probabilities, atol=1e-6)
            apart = max(apart, float(np.abs(own[0].probabilities - own[1].probabilities).max()))
    for m in members:
        m.close()
    assert apart > 0.1  # the two members really are different models (0.28 apart at most on these frames)


@pytest.mark.parametrize("combine", ["mean-logits", "mean-probabilities", "vote"])
def test_unet_with_flips_equals_the_by_hand_combination(combine, unet_bundle, busi, tmp_path):
    """The shipped U-Net twice (weights 2 and 1) with hflip and vflip: 6 runs per frame, maps un-flipped, combined
    at the model's resolution, mapped back to the frame like a single model's."""
    from edgemed.tasks import combine as comb

    weights, flips = [2.0, 1.0], ["hflip", "vflip"]
    ens = make_ensemble([unet_bundle, unet_bundle], tmp_path / "ens", combine=combine, weights=weights, tta=flips)
    member = edgemed.load(unet_bundle, **FP32)
    changed = 0.0
    with edgemed.load(ens, **FP32) as pipe:
        for frame in busi["images"][:4]:
            outs = _views(member, frame, flips)
            want = _by_hand([outs, outs], weights, combine, axis=1)
            prepared, got = pipe.member_outputs(frame)
            maps, kind = comb.segmentation([o for g in got for o in g], ["logits"] * 6, pipe.weights, combine)
            if combine == "mean-logits":
                np.testing.assert_allclose(_softmax(maps.astype(np.float64), 1), want, atol=1e-5)
            else:
                np.testing.assert_allclose(maps, want, atol=1e-5)
            r = pipe.predict(frame, members=True)
            geometry = member.prepare(frame).geometry
            np.testing.assert_array_equal(r.mask, segmentation_mask(want.astype(np.float32), "probabilities",
                                                                    geometry)[0])
            assert r.mask.shape == frame.shape[:2]
            plain = member.predict(frame).mask
            np.testing.assert_array_equal(r.members[0].mask, plain)
            changed = max(changed, float(np.abs(_softmax(outs[1], 1) - _softmax(outs[0], 1)).max()))
    member.close()
    assert changed > 0.05  # a flipped view's un-flipped map is not the plain one: the views really differ


def test_members_of_another_task_or_labels_are_refused_and_nothing_is_written(cnn_bundle, unet_bundle, cnn_seed1,
                                                                               tmp_path):
    with pytest.raises(BundleError, match="segmentation bundle.*ensemble bundles of one task"):
        make_ensemble([cnn_bundle, unet_bundle], tmp_path / "mixed")
    other = tmp_path / "relabelled"
    shutil.copytree(cnn_seed1, other)
    manifest = json.loads((other / "edgemed.json").read_text())
    manifest["model"]["labels"] = list(reversed(manifest["model"]["labels"]))
    (other / "edgemed.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="labels.*same labels in the same order"):
        make_ensemble([cnn_bundle, other], tmp_path / "labels")
    with pytest.raises(OptionError, match="weights"):
        make_ensemble([cnn_bundle, cnn_seed1], tmp_path / "w", weights="1,0")
    with pytest.raises(OptionError, match="rot90"):
        make_ensemble([cnn_bundle], tmp_path / "t", tta="rot90")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relabelled"]  # no ensemble, no partial folder


def test_a_changed_member_file_is_refused_at_load(cnn_bundle, cnn_seed1, tmp_path):
    ens = make_ensemble([cnn_bundle, cnn_seed1], tmp_path / "ens", tta="hflip")
    model = ens / "members" / "1-cnn_breastmnist_seed1" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"member members/1-cnn_breastmnist_seed1: .*model.onnx does not match"):
        edgemed.load(ens)
    inner = ens / "members" / "0-cnn_breastmnist" / "edgemed.json"
    inner.write_text(inner.read_text().replace('"malignant"', '"malignant "'))
    with pytest.raises(BundleError, match=r"members\[0\].manifest_sha256"):
        edgemed.load(ens)


def test_cli_and_signature_cover_the_members(cnn_bundle, cnn_seed1, tmp_path):
    from edgemed.signing import sign_bundle
    from edgemed.signing_keys import generate_keypair

    out = tmp_path / "ens"
    r = CliRunner().invoke(main, ["ensemble", str(cnn_bundle), str(cnn_seed1), "-o", str(out), "--combine", "vote",
                                  "--weights", "1,1", "--tta", "hflip,vflip"])
    assert r.exit_code == 0, r.output
    assert "2 member(s) x 3 view(s) = 6 runs per frame, combined by vote" in r.output
    bad = CliRunner().invoke(main, ["ensemble", str(cnn_bundle), "-o", str(tmp_path / "one")])
    assert bad.exit_code != 0 and "one member and no --tta" in bad.output and len(bad.output.splitlines()) == 1
    frame = Path(edgemed.samples.samples_dir("breastmnist")) / "breastmnist_test_000.png"
    ran = CliRunner().invoke(main, ["predict", str(out), str(frame), "--json"])
    assert ran.exit_code == 0, ran.output
    with edgemed.load(out) as pipe:
        assert json.loads(ran.output)["label"] == pipe.predict(frame).label
    checked = CliRunner().invoke(main, ["verify", str(out)])
    assert checked.exit_code == 0, checked.output
    assert "0-cnn_breastmnist/model.onnx onnxruntime/fp32: hashes ok" in checked.output
    assert "1-cnn_breastmnist_seed1/model.onnx onnxruntime/fp32: hashes ok" in checked.output
    public = generate_keypair(tmp_path / "keys" / "k")
    sign_bundle(out, tmp_path / "keys" / "k")
    with edgemed.load(out, require_signature=public) as pipe:
        assert pipe.predict(np.full((28, 28), 128, np.uint8)).label in pipe.labels
    report = out / "members" / "0-cnn_breastmnist" / "report.json"
    report.write_text(report.read_text() + " ")
    with pytest.raises(BundleError, match="differs from what was signed.*members/0-cnn_breastmnist/report.json"):
        edgemed.load(out, require_signature=public)


def test_the_combination_is_gated_against_the_fp32_combination(cnn_bundle_all, cnn_seed1, breastmnist, tmp_path):
    """The shipped classifier with its INT8/FP16 artifacts beside the FP32-only seed-1 model: the combination as it
    serves on the CPU is judged against the FP32 combination by the task's default budget, with bounds, on 156
    BreastMNIST test frames, and the verdict says which artifact of each member served."""
    from edgemed.ensemble.opening import open_ensemble
    from edgemed.gate.verdict import default_budget

    frames = tmp_path / "test.npz"
    np.savez(frames, images=breastmnist["test_images"])
    ens = make_ensemble([cnn_bundle_all, cnn_seed1], tmp_path / "ens", combine="mean-probabilities", eval=frames)
    gate = open_ensemble(ens).manifest.gate
    with edgemed.load(ens) as pipe:
        served = [m["backend"] + "/" + m["precision"] for m in pipe.describe()["members"]]
        assert pipe.describe()["combination_gate"]["verdict"] == gate.drift.verdict
        # every served artifact keeps its own verdict; the combination's is recorded beside them
        assert all(m["verdict"] == "passed" for m in pipe.describe()["members"])
    assert gate.served == served and gate.device == "cpu"
    assert gate.drift.cases == 156 and gate.drift.evaluated_on == "156 frames of test.npz"
    if served[0].endswith("fp32"):  # the profile preferred an FP32 artifact: the combination is exact
        assert gate.drift.budget == "parity" and gate.drift.passed
    else:
        assert gate.drift.budget == str(default_budget("classification"))
        agreement = gate.drift.metrics["agreement"]
        assert agreement.low is not None and agreement.low <= agreement.value <= 1.0


def test_detectors_are_refused_box_fusion_is_not_implemented(det_fp32, tmp_path):
    """The shipped BUSI detector (the session's FP32 ONNX bundle): refused at creation, in one line, nothing
    written."""
    det = det_fp32
    r = CliRunner().invoke(main, ["ensemble", str(det), str(det), "-o", str(tmp_path / "ens")])
    assert r.exit_code != 0 and len(r.output.strip().splitlines()) == 1
    assert "detector" in r.output and "box fusion" in r.output and "ensemble classifiers or segmenters" in r.output
    assert not (tmp_path / "ens").exists() and not list(tmp_path.iterdir())


def test_a_reduced_precision_combination_is_judged_by_the_budget_with_bounds(cnn_bundle_all, breastmnist, tmp_path):
    """The shipped classifier's INT8 artifact (accepted: uncertified on its own) with hflip, against its FP32
    combination on 156 BreastMNIST test frames: judged by the task's default budget, every figure with its cases and
    a one-sided bound (the parity branch is the default test above on this CPU, whose profile serves FP32)."""
    from edgemed.datasets import ImageSet
    from edgemed.ensemble.gate import judge_combination
    from edgemed.gate.verdict import default_budget

    frames = tmp_path / "test.npz"
    np.savez(frames, images=breastmnist["test_images"])
    ens = make_ensemble([cnn_bundle_all], tmp_path / "ens", tta="hflip")
    gate = judge_combination(ens, ImageSet.open(frames), backend="onnxruntime", precision="int8", accept="uncertified")
    assert gate.served == ["onnxruntime/int8"] and gate.drift.budget == str(default_budget("classification"))
    assert gate.drift.cases == 156 and gate.drift.verdict in ("passed", "uncertified", "failed")
    for name in ("agreement", "class_agreement"):  # class agreement: its worst class, on that class's cases
        est = gate.drift.metrics[name]
        assert 0 < est.cases <= 156 and est.low is not None and est.low <= est.value <= 1.0
    assert gate.drift.metrics["agreement"].cases == 156


def test_an_ensemble_streams_like_a_pipeline(cnn_bundle, cnn_seed1, breastmnist, tmp_path):
    """pipe.stream on an ensemble: every frame's combined result, in order, equal to predict's (all members and
    flips run in the inference stage); and as a live source (fps) it counts its drops like a single model."""
    ens = make_ensemble([cnn_bundle, cnn_seed1], tmp_path / "ens", combine="mean-logits", tta=["hflip"])
    frames = list(breastmnist["test_images"][:12])
    with edgemed.load(ens, **FP32) as pipe:
        want = [pipe.predict(f).probabilities for f in frames]
        got = list(pipe.stream(frames))
        assert [s.index for s in got] == list(range(len(frames)))
        for s, w in zip(got, want):
            assert not s.dropped and np.array_equal(s.result.probabilities, w)
        live = list(pipe.stream(frames * 20, fps=1000.0))
        stats = pipe.last_stream_stats
        assert stats["processed"] + stats["dropped"] == len(frames) * 20 and stats["processed"] >= 1
        assert all(s.dropped or s.result.label in pipe.labels for s in live)


def test_bench_puts_the_ensemble_beside_its_members_on_the_same_labelled_cases(cnn_bundle, cnn_seed1, shared_data,
                                                                                tmp_path):
    """edgemed bench ENSEMBLE on the 156 BreastMNIST test cases: the ensemble, each member alone and the ensemble
    without its flips timed side by side; accuracies equal what predicting the cases gives; the paired difference
    against the best member counts the same discordant cases a by-hand count does, inside its 95% interval; the
    point-of-care stream runs the ensemble and counts its deadline misses; the history records every row."""
    from edgemed.benchmarks.history import History

    ens = make_ensemble([cnn_bundle, cnn_seed1], tmp_path / "ens", tta="hflip")
    data = shared_data / "breastmnist.npz"
    out, store = tmp_path / "bench.json", tmp_path / "history.sqlite"
    ran = CliRunner().invoke(main, ["bench", str(ens), "--data", str(data), "--data-key", "test_images", "--runs", "20",
                                    "--warmup", "2", "--scenario", "point-of-care", "--duration", "1", "--json",
                                    str(out), "--history", str(store)])
    assert ran.exit_code == 0, ran.output
    report = json.loads(out.read_text())
    assert report["schema"] == "edgemed-bench/2" and report["task"] == "classification"
    assert report["data"]["labels"] and report["data"]["images"] == 156
    rows = report["artifacts"]
    assert [a["configuration"] for a in rows] == ["ensemble", "ensemble without flips", "member", "member"]
    assert [a["runs_per_frame"] for a in rows] == [4, 2, 1, 1]
    for a in rows:
        lat = a["latency"]["end_to_end"]
        assert lat["runs"] == 20 and 0 < lat["p50_ms"] <= lat["p99_ms"]
    with edgemed.load(ens) as pipe:
        truth = np.load(data)["test_labels"].reshape(-1)
        results = [pipe.predict(f, members=True) for f in np.load(data)["test_images"]]
    right = {"ensemble": np.array([r.index == t for r, t in zip(results, truth)])}
    for i in range(2):
        right[i] = np.array([r.members[i].index == t for r, t in zip(results, truth)])
    assert rows[0]["accuracy"]["accuracy"] == pytest.approx(right["ensemble"].mean(), abs=1e-12)
    assert [a["accuracy"]["accuracy"] for a in rows[2:]] == pytest.approx([right[0].mean(), right[1].mean()])
    best = int(right[1].mean() > right[0].mean())
    assert report["ensemble"]["best_member"] == rows[2 + best]["file"].rsplit("/", 1)[0]
    vs = rows[0]["vs_best_member"]
    assert vs["only_member_right"] == int((right[best] & ~right["ensemble"]).sum())
    assert vs["only_ensemble_right"] == int((~right[best] & right["ensemble"]).sum())
    assert vs["gain"] == pytest.approx(right["ensemble"].mean() - right[best].mean())
    assert vs["cases"] == 156 and vs["low"] <= vs["gain"] <= vs["high"] and vs["interval"] == "two-sided"
    assert "vs_best_member" in rows[1] and all("vs_best_member" not in a for a in rows[2:])
    drift = rows[0]["drift_on_data"]  # every member serves FP32 here: the combination is judged by parity
    assert drift["cases"] == 156 and drift["budget"] == "parity" and drift["verdict"] == "passed"
    poc = rows[0]["point_of_care"]
    assert poc["frames"] == 30 and poc["processed"] + poc["dropped"] == 30
    assert 0 <= poc["deadline_misses"] <= poc["delivered"]
    for text in ("ensemble without flips (comparison only)", "members/1-cnn_breastmnist_seed1", "McNemar p=",
                 "point-of-care ensemble: ", "deadline misses",
                 "combination on the bench data against the FP32 combination: agreement 1.0000"):
        assert text in ran.output
    history = History(store)
    assert sorted(r["artifact"] for r in history.runs()) == sorted(a["file"] for a in rows)
    history.close()


def test_bench_an_ensemble_without_labels_and_refusals(cnn_bundle, cnn_seed1, tmp_path):
    """Without --data: the first member's own held-out frames, unlabelled (one member is a user's model: never
    graded on edgemed's samples), no pairing; --all and --scenario remote are refused in one line."""
    from edgemed.benchmarks.run import run_bench

    ens = make_ensemble([cnn_bundle, cnn_seed1], tmp_path / "ens")
    report = run_bench(ens, runs=10, warmup=1)
    assert not report["data"]["labels"] and report["ensemble"]["best_member"] is None
    assert "held-out" in report["data"]["from"] and "edgemed's labelled samples" not in report["data"]["from"]
    assert [a["configuration"] for a in report["artifacts"]] == ["ensemble", "member", "member"]  # no flips
    assert all("vs_best_member" not in a and "accuracy" not in a for a in report["artifacts"])
    assert report["artifacts"][1]["cost_vs_member"] == 1.0  # the first member is the yardstick without labels
    for flags, said in ((["--all"], "--all on the ensemble"), (["--scenario", "remote"], "--scenario remote")):
        r = CliRunner().invoke(main, ["bench", str(ens), "--no-history", *flags])
        assert r.exit_code != 0 and said in r.output and len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("combine", ["mean-logits", "mean-probabilities"])
def test_the_baked_graph_equals_the_members_combination(combine, cnn_bundle, cnn_seed1, breastmnist, tmp_path):
    """Two CNNs (weights 2 and 1) with hflip baked into one ONNX graph: on real frames the one call gives the
    members' combination (to 1e-5), whichever form the measurement made serve; the choice is recorded."""
    ens = make_ensemble([cnn_bundle, cnn_seed1], tmp_path / "ens", combine=combine, weights=[2.0, 1.0], tta=["hflip"])
    baked = json.loads((ens / "ensemble.json").read_text())["baked"]
    assert baked["file"]["file"] == "ensemble.onnx" and baked["max_abs_diff"] <= 1e-4 and baked["frames"] > 0
    assert baked["baked_ms"] > 0 and baked["members_ms"] > 0 and baked["serves"] == (
        baked["baked_ms"] < baked["members_ms"])
    with edgemed.load(ens, form="baked") as one, edgemed.load(ens, form="members") as apart:
        assert one.describe()["form"] == "baked: one graph" and apart.describe()["form"].startswith("members")
        for frame in breastmnist["test_images"][:16]:
            a, b = one.predict(frame), apart.predict(frame)
            np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
            assert a.index == b.index
        r = one.predict(breastmnist["test_images"][0], members=True)  # members' own answers: their own runs
        assert len(r.members) == 2
    with edgemed.load(ens) as default:  # what the measurement chose
        assert default.describe()["form"].startswith("baked" if baked["serves"] else "members")


def test_a_baked_unet_with_flips_gives_the_members_masks(unet_bundle, busi, tmp_path):
    ens = make_ensemble([unet_bundle, unet_bundle], tmp_path / "ens", combine="mean-logits", weights=[2.0, 1.0],
                        tta=["hflip", "vflip"])
    with edgemed.load(ens, form="baked") as one, edgemed.load(ens, form="members") as apart:
        for frame in busi["images"][:3]:
            p = one.prepare(frame)
            a, kind = one.combined_output(p, one.infer(p))
            b, _ = apart.combined_output(*apart.member_outputs(frame))
            assert kind == "logits"
            np.testing.assert_allclose(a, b, atol=1e-5)
            np.testing.assert_array_equal(one.predict(frame).mask, apart.predict(frame).mask)


def test_what_cannot_be_baked_says_why_and_a_changed_graph_is_refused(cnn_bundle, cnn_seed1, tmp_path):
    from edgemed.errors import BundleError, OptionError

    vote = make_ensemble([cnn_bundle, cnn_seed1], tmp_path / "vote", combine="vote")
    manifest = json.loads((vote / "ensemble.json").read_text())
    assert "baked" not in manifest and "counts votes" in manifest["bake_note"]
    with pytest.raises(OptionError, match="no baked graph"):
        edgemed.load(vote, form="baked")
    ens = make_ensemble([cnn_bundle, cnn_seed1], tmp_path / "ens")
    with open(ens / "ensemble.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="ensemble.onnx does not match"):
        edgemed.load(ens)
