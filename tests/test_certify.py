"""edgemed certify on real images: a site's own thousands of images turn an uncertified artifact into passed and a
flipping one into failed, without touching an artifact; signatures say whose verdict is trusted (issue 18)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import msgspec
import numpy as np
import pytest

from edgemed import load
from edgemed.bundle import Bundle, file_record
from edgemed.errors import NoEligibleArtifact
from edgemed.hashing import sha256_file

from .conftest import SHARED
from .site_images import breast_images


def edgemed(*args):
    return subprocess.run([sys.executable, "-m", "edgemed.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory, breastmnist, busi):
    path = tmp_path_factory.mktemp("site") / "site.npz"
    np.savez(path, images=np.stack(breast_images(breastmnist, busi)))
    return path


def _plain_int8(bundle, target):
    """A plain full INT8 quantization of the bundle's model (no fallback): a real quantization error that flips
    a few tenths of a percent of diagnoses."""
    from edgemed.converters.ort_quantize import preprocess_for_quantization, quantize_int8
    from edgemed.datasets import ImageSet

    b = Bundle.open(bundle)
    prepared = preprocess_for_quantization(bundle / "model.onnx", target.with_suffix(".prep.onnx"))
    quantize_int8(prepared, target, ImageSet.open(SHARED / "breastmnist.npz", key="train_images").subset(128),
                  b.preprocessor(), "input")
    target.with_suffix(".prep.onnx").unlink()


# What this site certifies at: 99.8% agreement and 99% of every class. At conversion 314 held-out images cannot
# certify it even with no flip (the bound stops at 99.78%); the site's 4,780 images can.
BUDGET = "agreement>=0.998,class_agreement>=0.99"


@pytest.fixture(scope="module")
def signed_bundle(tmp_path_factory):
    """The shipped classifier as ONNX Runtime FP32/FP16 and OpenVINO FP32, plus an INT8 artifact made by a plain
    quantization that flips (as conversion would leave it: uncertified), signed by its vendor."""
    from edgemed.gate.verdict import Budget

    from .conftest import convert_shipped

    root = tmp_path_factory.mktemp("certify")
    bundle = convert_shipped("cnn_breastmnist", root / "cnn", targets=("onnx", "openvino"), precisions=("fp32", "fp16"),
                             calib=SHARED / "breastmnist.npz", calib_key="train_images",
                             budget=Budget.parse(BUDGET, "classification"))
    _plain_int8(bundle, bundle / "model.int8.onnx")
    manifest = msgspec.to_builtins(Bundle.open(bundle).manifest)
    fp16 = next(a for a in manifest["artifacts"] if a["precision"] == "fp16" and a["backend"] == "onnxruntime")
    manifest["artifacts"].append({**fp16, **msgspec.to_builtins(file_record(bundle, "model.int8.onnx")),
                                  "precision": "int8"})
    (bundle / "edgemed.json").write_text(json.dumps(manifest))
    for who in ("vendor", "hospital"):
        assert edgemed("keygen", "--out", root / f"{who}.key").returncode == 0
    assert edgemed("sign", bundle, "--key", root / "vendor.key").returncode == 0
    return bundle, root


def _artifact_hashes(bundle):
    return {p.name: sha256_file(p) for p in bundle.iterdir() if p.is_file()}


def test_certify_decides_what_conversion_could_not(signed_bundle, site):
    bundle, keys = signed_bundle
    before = Bundle.open(bundle).manifest
    fp16 = before.artifact("onnxruntime", "fp16")
    assert fp16.verdict == "uncertified" and fp16.drift.budget == BUDGET  # 314 cases cannot certify it
    hashes = _artifact_hashes(bundle)

    proc = edgemed("certify", bundle, "--eval", site, "--key", keys / "hospital.key")
    assert proc.returncode == 0, proc.stderr
    assert _artifact_hashes(bundle) == hashes  # no artifact, manifest or signature touched
    record = json.loads((bundle / "certifications" / "0001.json").read_text())
    by_file = {a["file"]: a for a in record["artifacts"]}
    assert record["data"]["cases"] == 4780 and record["signature"]["key_fingerprint"]

    # faithful FP16 on 4,780 real images: passed (every term's lower bound meets its budget)
    assert by_file[fp16.file]["drift"]["verdict"] == "passed", by_file[fp16.file]["drift"]["missed"]
    assert by_file[fp16.file]["drift"]["metrics"]["agreement"]["low"] >= 0.998
    # the plain INT8 flips: counted flips make the upper bound miss the budget
    flipping = by_file["model.int8.onnx"]["drift"]
    assert flipping["verdict"] == "failed" and flipping["metrics"]["agreement"]["high"] < 0.998
    assert any(k.startswith("class_agreement[") for k in flipping["metrics"])  # per-class figures reported
    # FP32 on OpenVINO: parity, whatever the data size
    assert by_file["openvino.fp32.xml"]["drift"]["budget"] == "parity"

    # unsigned trust (no signature required): the certification counts
    with load(bundle, backend="onnxruntime", precision="fp16") as pipe:
        assert pipe.artifact.verdict == "passed" and pipe.artifact.drift.cases == 4780
        assert "certification 0001.json" in pipe.artifact.drift.evaluated_on
    with pytest.raises(NoEligibleArtifact, match="failed"):
        load(bundle, backend="onnxruntime", precision="int8", accept="uncertified")  # a failure sticks

    # the vendor's signature still holds; the hospital's certification is trusted only when named
    out = edgemed("verify", bundle, "--pubkey", keys / "vendor.pub")
    assert out.returncode == 0, out.stderr
    assert "not signed by a trusted key" in out.stdout and "model.fp16.onnx onnxruntime/fp16: uncertified" in out.stdout
    out = edgemed("verify", bundle, "--pubkey", keys / "vendor.pub", "--certifier", keys / "hospital.pub")
    assert out.returncode == 0, out.stderr
    fp = out.stdout.split("model.fp16.onnx onnxruntime/fp16: hashes ok")[1].splitlines()[1]
    assert "certification 0001.json signed by key" in fp
    with pytest.raises(NoEligibleArtifact):
        load(bundle, backend="onnxruntime", precision="fp16", require_signature=keys / "vendor.pub")
    with load(bundle, backend="onnxruntime", precision="fp16", require_signature=keys / "vendor.pub",
              certifiers=[keys / "hospital.pub"]) as pipe:
        assert pipe.artifact.verdict == "passed"


def test_a_tampered_certification_is_not_trusted(signed_bundle, site, tmp_path):
    bundle, keys = signed_bundle
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    folder = copy / "certifications"
    if not folder.is_dir():
        assert edgemed("certify", copy, "--eval", site, "--key", keys / "hospital.key").returncode == 0
    record = folder / sorted(p.name for p in folder.glob("*.json"))[0]
    doc = json.loads(record.read_text())
    for a in doc["artifacts"]:
        a["drift"]["verdict"] = "passed"  # promote the flipping artifact
    record.write_text(json.dumps(doc))
    with pytest.raises(NoEligibleArtifact):
        load(copy, backend="onnxruntime", precision="int8", require_signature=keys / "vendor.pub",
             certifiers=[keys / "hospital.pub"])
    out = edgemed("verify", copy, "--pubkey", keys / "vendor.pub", "--certifier", keys / "hospital.pub")
    assert "not signed by a trusted key" in out.stdout
