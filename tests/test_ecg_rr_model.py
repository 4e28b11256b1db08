"""The two-input ECG model ecg_rr (beat window + RR intervals): its RR input computed as the card defines it,
and its ONNX export (two named inputs, a dynamic batch axis) giving ONNX Runtime the PyTorch outputs on
real DS2 beats."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest

from edgemed.samples import assets_dir
from edgemed.signal_preprocess import apply_beat_ops

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from edgemed.converters.export_onnx import OPSET  # noqa: E402
from edgemed.zoo import build  # noqa: E402
from edgemed.zoo.ecg import RR_FEATURES, rr_features  # noqa: E402


@pytest.fixture(scope="module")
def mitbih(shared_data):
    with np.load(shared_data / "mitbih" / "mitdb_beats_ds1ds2.npz") as d:
        return {k: d[k] for k in ("x", "y", "record", "r_peak", "rr_pre", "rr_post", "split")}


@pytest.fixture(scope="module")
def card():
    return json.loads((assets_dir() / "ecg_rr.json").read_text())


def test_rr_features_match_the_annotations_and_their_definition(mitbih):
    record, peaks = mitbih["record"], mitbih["r_peak"].astype(np.int64)
    rr = rr_features(record, peaks)
    assert rr.shape == (len(peaks), len(RR_FEATURES)) and rr.dtype == np.float32
    first = np.r_[True, record[1:] != record[:-1]]
    last = np.r_[record[1:] != record[:-1], True]
    assert np.isnan(rr[first | last]).all() and np.isfinite(rr[~(first | last)]).all()
    inner = ~(first | last)
    # rr_pre and rr_post as the data set itself states them (from every WFDB beat annotation)
    np.testing.assert_allclose(rr[inner, 0], mitbih["rr_pre"][inner], atol=1e-6)
    np.testing.assert_allclose(rr[inner, 1], mitbih["rr_post"][inner], atol=1e-6)
    # rr_local and rr_average by their definitions, written out beat by beat on one record (232: long pauses)
    rows = np.flatnonzero(record == 232)
    p = peaks[rows]
    intervals = np.diff(p) / 360.0
    for k in range(1, len(p) - 1):
        local = intervals[max(0, k - 10):k].mean()
        window = [j for j in range(1, k + 1) if p[j - 1] >= p[k] - 300 * 360] or [k]
        assert rr[rows[k], 2] == pytest.approx(local, abs=1e-5)
        assert rr[rows[k], 3] == pytest.approx(np.mean([intervals[j - 1] for j in window]), abs=1e-5)


def test_rr_features_refuse_unsorted_peaks():
    with pytest.raises(ValueError, match="strictly increasing"):
        rr_features(np.array([1, 1, 1, 1]), np.array([10, 400, 300, 900]))


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_onnx_export_with_two_named_inputs_matches_pytorch_on_ds2_beats(mitbih, card, dynamo):
    model = build(card["arch"], **card["arch_args"])
    model.load_state_dict(torch.load(assets_dir() / "ecg_rr.pt", weights_only=True))
    model.eval()
    rr_all = rr_features(mitbih["record"], mitbih["r_peak"])
    ds2 = np.flatnonzero((mitbih["split"] == 1) & (mitbih["y"] < 4) & np.isfinite(rr_all).all(axis=1))
    rng = np.random.default_rng(0)
    rare = [rng.choice(ds2[mitbih["y"][ds2] == c], 25, replace=False) for c in (1, 2, 3)]  # S, V, F among them
    pick = np.unique(np.concatenate([rng.choice(ds2, 400, replace=False), *rare]))
    beat = apply_beat_ops(mitbih["x"][pick][:, None, :] / 200.0, card["preprocess"]).astype(np.float32)
    rr = rr_all[pick]
    assert [i["name"] for i in card["inputs"]] == ["beat", "rr"]
    assert beat.shape[1:] == tuple(card["inputs"][0]["shape"][1:])
    assert rr.shape[1:] == tuple(card["inputs"][1]["shape"][1:])

    example = (torch.from_numpy(beat[:2]), torch.from_numpy(rr[:2]))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.onnx.export(model, example, dynamo=True, input_names=["beat", "rr"],
                                        output_names=["logits"], dynamic_shapes=({0: batch}, {0: batch}),
                                        opset_version=OPSET, verbose=False)
            onnx_bytes = program.model_proto.SerializeToString()
        else:
            torch.onnx.export(model, example, buffer, dynamo=False, input_names=["beat", "rr"],
                              output_names=["logits"], opset_version=OPSET,
                              dynamic_axes={"beat": {0: "batch"}, "rr": {0: "batch"}, "logits": {0: "batch"}})
            onnx_bytes = buffer.getvalue()
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["beat", "rr"]
    with torch.no_grad():
        want = model(torch.from_numpy(beat), torch.from_numpy(rr)).numpy()
    got = session.run(None, {"beat": beat, "rr": rr})[0]  # the whole batch at once: the batch axis is dynamic
    assert got.shape == want.shape == (len(pick), len(card["labels"]))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    one = session.run(None, {"beat": beat[:1], "rr": rr[:1]})[0]
    np.testing.assert_allclose(one, want[:1], atol=1e-4, rtol=0)
    assert (got.argmax(1) == want.argmax(1)).all()
