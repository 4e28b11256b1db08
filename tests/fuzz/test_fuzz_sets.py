"""Image and signal sets given to ``bench`` (``--data``/``--labels``) and ``convert`` (``--calib``): folders with
damaged files, ``.npz`` archives of arrays of every dtype and shape (or damaged bytes), signal sets whose ``fs``,
``units``, ``adc_gain`` and ``leads`` are wrong in every way, label files that do not fit. (``certify``, which
re-judges a bundle on site data, does not exist yet: DESIGN.md lists it as a proposal.)"""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from . import strategies as fs
from .harness import fuzz_settings, outcome

pytestmark = pytest.mark.fuzz

_values = st.sampled_from([360, 120.0, 0, -1, float("nan"), float("inf"), "360", "mV", b"mV", [360, 360], [], True,
                           200, 1e-300, "uV", "furlong", "", None, ["MLII"], ["MLII", "V1"], [1], "MLII"])


def _npz(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: v for k, v in arrays.items() if v is not None})
    return buf.getvalue()


@st.composite
def image_set(draw, folder):
    """A folder of image files (some good, some not), an .npz of image arrays, or damaged .npz bytes."""
    kind = draw(st.sampled_from(["folder", "npz", "npz", "frames", "bytes"]))
    good = (np.arange(28 * 28) % 251).astype(np.uint8).reshape(28, 28)
    if kind == "folder":
        d = folder / "set"
        d.mkdir()
        for i in range(draw(st.integers(0, 4))):
            how = draw(st.sampled_from(["good", "npy", "bytes"]))
            name = f"f{i}{draw(st.sampled_from(['.png', '.npy', '.dcm', '.tif', '.jpg']))}"
            if how == "good":
                Image.fromarray(good).save(d / f"g{i}.png")
            elif how == "npy":
                (d / f"a{i}.npy").write_bytes(draw(fs.npy_bytes()))
            else:
                (d / name).write_bytes(draw(st.binary(max_size=300)))
        return d
    path = folder / "set.npz"
    if kind == "bytes":
        path.write_bytes(fs.mutate(_npz({"images": np.stack([good] * 3)}), draw, max_ops=3))
        return path
    stack = draw(fs.arrays(fs.shapes(max_rank=5), fs.NUMERIC * 2 + ["bool", "object", "<U2", "complex64"]))
    if stack.dtype.kind == "O":
        path.write_bytes(_npz({"images": np.zeros(3)}) + b"")  # object arrays are never written unpickled
        stack = stack.astype(str)
    key = draw(st.sampled_from(["images", "images", "test_images", "frames", "labels"]))
    if kind == "frames":
        arrays = {f"frame_{i:03d}": draw(fs.arrays()) for i in range(draw(st.integers(1, 3)))}
    else:
        arrays = {key: stack}
    if draw(st.booleans()):
        arrays["labels"] = draw(fs.arrays(fs.shapes(max_rank=2), fs.NUMERIC + ["<U3"]))
    path.write_bytes(_npz(arrays))
    return path


@st.composite
def signal_set(draw, folder):
    base = np.sin(np.arange(180) / 5.0)[None].repeat(8, 0) * (1 + np.arange(8)[:, None])
    arrays = {"signals": base, "fs": np.array(120.0), "units": np.array("mV"), "adc_gain": None,
              "leads": np.array(["MLII"]), "labels": None}
    for key in draw(st.sets(st.sampled_from(sorted(arrays)), max_size=3)):
        arrays[key] = draw(st.one_of(_values.map(_as_array), fs.arrays(fs.shapes(max_rank=3)))) \
            if key != "signals" else draw(fs.arrays(fs.shapes(max_rank=4)))
    for key in draw(st.sets(st.sampled_from(["signals", "fs", "units"]), max_size=1)):
        arrays.pop(key)
    path = folder / "beats.npz"
    raw = _npz({k: v for k, v in arrays.items() if v is not None and getattr(v, "dtype", None) is not np.dtype(object)})
    path.write_bytes(fs.mutate(raw, draw, max_ops=2) if draw(st.integers(0, 4)) == 0 else raw)
    return path


def _as_array(v):
    try:
        return np.array(v)
    except (ValueError, TypeError):
        return np.array(0)


@st.composite
def labels_for(draw, folder, data_path):
    kind = draw(st.sampled_from(["none", "none", "csv", "npz", "folder", "missing"]))
    if kind == "none":
        return None
    if kind == "csv":
        path = folder / "labels.csv"
        rows = draw(st.lists(st.tuples(st.sampled_from(["g0.png", "f1.png", "images[0]", "", "x,y"]),
                                       st.sampled_from(["0", "1", "2", "-1", "malignant", "N", "", "1e9", "0x1"])),
                             max_size=4))
        header = draw(st.sampled_from(["file,label", "label,file", "file", ""]))
        path.write_text("\n".join([header] + [f"{a},{b}" for a, b in rows]))
        return path
    if kind == "npz":
        path = folder / "labels.npz"
        key = draw(st.sampled_from(["labels", "masks", "test_labels", "other"]))
        path.write_bytes(_npz({key: draw(fs.arrays(fs.shapes(max_rank=3), fs.NUMERIC + ["<U3"]))}))
        return path
    if kind == "folder":
        d = folder / "masks"
        d.mkdir()
        (d / "g0.png").write_bytes(draw(st.binary(max_size=64)))
        return d
    return folder / "no-such-labels.csv"


def _finite_report(report):
    json.dumps(report, allow_nan=False)  # a report (and the history row made from it) holds no NaN or Inf


@fuzz_settings(60, deadline_s=30)
@given(data=st.data())
def test_bench_on_image_sets(cnn_bundle, tmp_path_factory, data):
    from edgemed.benchmarks.run import run_bench

    folder = tmp_path_factory.mktemp("bench-set")
    path = data.draw(image_set(folder))
    labels = data.draw(labels_for(folder, path))
    key = data.draw(st.sampled_from([None, None, "images", "frames", "nope"]))
    limit = data.draw(st.sampled_from([None, None, 1, 0, -3]))
    outcome("bench (image sets)", lambda: run_bench(cnn_bundle, data=path, labels=labels, data_key=key, limit=limit,
                                                    runs=2, warmup=0), _finite_report)
    shutil.rmtree(folder, ignore_errors=True)


@fuzz_settings(60, deadline_s=30)
@given(data=st.data())
def test_bench_on_signal_sets(ecg_bundle, tmp_path_factory, data):
    from edgemed.benchmarks.run import run_bench

    folder = tmp_path_factory.mktemp("bench-signals")
    path = data.draw(signal_set(folder))
    outcome("bench (signal sets)", lambda: run_bench(ecg_bundle, data=path, runs=2, warmup=0), _finite_report)
    shutil.rmtree(folder, ignore_errors=True)


@fuzz_settings(12, deadline_s=60)
@given(data=st.data())
def test_convert_with_hostile_calibration_sets(cnn_bundle, ecg_bundle, tmp_path_factory, data):
    """convert from the bundle's own ONNX file (no torch export: the set is what is under test), and nothing is
    left behind when it refuses: no bundle, no hidden partial folder."""
    from edgemed.converters.convert import convert

    folder = tmp_path_factory.mktemp("convert-set")
    signal = data.draw(st.booleans())
    path = data.draw(signal_set(folder) if signal else image_set(folder))
    out = folder / "out" / "bundle"
    source = (ecg_bundle if signal else cnn_bundle) / "model.onnx"
    kwargs = dict(task="classification", calib=path, targets=("onnx",), precisions=("fp32",))
    if signal:
        from edgemed.bundle import Bundle

        m = Bundle.open(ecg_bundle).manifest
        kwargs.update(input_kind="signal", preprocess=tuple(m.preprocess), labels=tuple(m.model.labels))
    result = outcome("convert (calibration sets)", lambda: convert(source, out, **kwargs))
    leftovers = [p.name for p in out.parent.iterdir()] if out.parent.exists() else []
    assert (leftovers == ["bundle"]) if result is not None else not leftovers, leftovers
    shutil.rmtree(folder, ignore_errors=True)
