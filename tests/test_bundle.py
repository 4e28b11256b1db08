"""The bundle refuses tampering, truncation, hostile paths and unknown schemas, naming the problem."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from edgemed import load
from edgemed.bundle import Bundle
from edgemed.errors import BundleError


@pytest.fixture
def copy(cnn_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(cnn_bundle, dst)
    return dst


def _edit_manifest(path, fn):
    m = json.loads((path / "edgemed.json").read_text())
    fn(m)
    (path / "edgemed.json").write_text(json.dumps(m))


def test_intact_bundle_loads(copy):
    with load(copy) as pipe:
        assert pipe.describe()["artifact"] == "model.onnx"


def test_changed_model_byte_is_refused_naming_the_file(copy):
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.onnx does not match its SHA-256"):
        load(copy)


def test_truncated_model_is_refused(copy):
    data = (copy / "model.onnx").read_bytes()
    (copy / "model.onnx").write_bytes(data[:-100])
    with pytest.raises(BundleError, match=r"model\.onnx is \d+ bytes.*truncated"):
        load(copy)


def test_changed_reference_or_report_is_refused(copy):
    with open(copy / "report.json", "a") as f:
        f.write(" ")
    with pytest.raises(BundleError, match="report.json"):
        Bundle.open(copy)


def test_missing_file(copy):
    os.remove(copy / "reference.npz")
    with pytest.raises(BundleError, match=r"reference.npz \(files\[0\].file\) is missing"):
        Bundle.open(copy)


@pytest.mark.parametrize("name", ["../model.onnx", "/etc/passwd", "sub/../../x"])
def test_paths_outside_the_bundle_are_refused(copy, name):
    _edit_manifest(copy, lambda m: m["artifacts"][0].update(file=name))
    with pytest.raises(BundleError, match="outside the bundle"):
        Bundle.open(copy)


def test_symlink_pointing_out_is_refused(copy, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.copy(copy / "model.onnx", outside)
    os.remove(copy / "model.onnx")
    os.symlink(outside, copy / "model.onnx")
    with pytest.raises(BundleError, match="outside the bundle"):
        Bundle.open(copy)


def test_future_schema_and_bad_json(copy):
    _edit_manifest(copy, lambda m: m.update(schema_version=99))
    with pytest.raises(BundleError, match="newer than this edgemed"):
        Bundle.open(copy)
    (copy / "edgemed.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.open(copy)


def test_giant_shape_and_unknown_op(copy):
    _edit_manifest(copy, lambda m: m["input"].update(shape=[1, 64, 100000, 100000]))
    with pytest.raises(BundleError, match="implausibly large"):
        Bundle.open(copy)


def test_unknown_preprocess_op(copy):
    _edit_manifest(copy, lambda m: m["preprocess"].append({"op": "exec", "code": "rm -rf /"}))
    with pytest.raises(BundleError, match="unknown op 'exec'"):
        Bundle.open(copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not a directory"):
        Bundle.open(tmp_path / "nope")
    with pytest.raises(BundleError, match="edgemed.json is missing"):
        Bundle.open(tmp_path)
