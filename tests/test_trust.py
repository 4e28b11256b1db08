"""Trust: signed bundles, hostile bundles and images, fuzzing, crash safety."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgemed import load
from edgemed.bundle import Bundle
from edgemed.errors import BundleError, InputError
from edgemed.io.images import read_frames
from edgemed.preprocess import validate_spec
from edgemed.signing import sign_bundle, verify_signature
from edgemed.signing_keys import generate_keypair

from .conftest import DICOM, convert_shipped

FUZZ_CORPUS = Path(__file__).parent / "fixtures" / "fuzz"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    return d / "signer", generate_keypair(d / "signer"), generate_keypair(d / "other")


@pytest.fixture
def signed(cnn_bundle, tmp_path, keys):
    dst = tmp_path / "signed"
    shutil.copytree(cnn_bundle, dst)
    sign_bundle(dst, keys[0])
    return dst


# --- signatures ------------------------------------------------------------------------------

def test_signed_bundle_loads_with_the_right_key(signed, keys):
    assert len(verify_signature(signed, keys[1])) == 16
    with load(signed, require_signature=keys[1]) as pipe:
        assert pipe.predict(np.full((28, 28), 90, np.uint8)).label


def test_wrong_key_is_refused(signed, keys):
    with pytest.raises(BundleError, match="signature does not match the public key"):
        load(signed, require_signature=keys[2])


@pytest.mark.parametrize("change,needle", [
    ("modify", r"changed: report.json"), ("add", r"added: notes.txt"), ("remove", r"removed: reference.npz"),
    ("manifest", r"changed: edgemed.json"),
])
def test_any_change_after_signing_is_named(signed, keys, change, needle):
    if change == "modify":
        with open(signed / "report.json", "a") as f:
            f.write(" ")
    elif change == "add":
        (signed / "notes.txt").write_text("hi")
    elif change == "remove":
        (signed / "reference.npz").unlink()
    else:  # a re-hashed manifest that still verifies on its own: only the signature catches it
        m = json.loads((signed / "edgemed.json").read_text())
        m["model"]["labels"] = ["benign_or_normal", "malignant"]  # swapped: a silently wrong answer
        (signed / "edgemed.json").write_text(json.dumps(m))
        Bundle.open(signed)  # the unsigned checks cannot see this
    with pytest.raises(BundleError, match=needle):
        load(signed, require_signature=keys[1])


def test_unsigned_bundle_with_required_signature(cnn_bundle, keys):
    with pytest.raises(BundleError, match="is not signed"):
        load(cnn_bundle, require_signature=keys[1])


def test_forged_signature_file(signed, keys):
    rec = json.loads((signed / "edgemed.sig").read_text())
    rec["signature"] = rec["signature"][:-4] + ("AAAA" if not rec["signature"].endswith("AAAA") else "BBBB")
    (signed / "edgemed.sig").write_text(json.dumps(rec))
    with pytest.raises(BundleError, match="signature does not match|malformed"):
        verify_signature(signed, keys[1])


# --- hostile bundles -------------------------------------------------------------------------

def test_pickled_reference_is_refused_not_unpickled(cnn_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(cnn_bundle, dst)
    np.savez(dst / "reference.npz", inputs=np.array([object()], dtype=object), outputs=np.zeros(1))
    m = json.loads((dst / "edgemed.json").read_text())
    import msgspec

    from edgemed.bundle import file_record

    m["files"] = [msgspec.to_builtins(file_record(dst, name)) for name in ("reference.npz", "report.json")]
    (dst / "edgemed.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="not a plain array archive"):
        Bundle.open(dst).reference()


# --- hostile images --------------------------------------------------------------------------

def _png_declaring(width: int, height: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    # 72 MP: under Pillow's own bomb threshold (89 MP), over edgemed's 64 MP limit.
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_declaring(9000, 8000))
    assert bomb.stat().st_size < 200
    with pytest.raises(InputError, match="bomb.png: declares a 9000x8000 image, beyond edgemed's"):
        read_frames(bomb)
    giant = tmp_path / "giant.png"  # 10 GP: Pillow's DecompressionBombError, reported the same way
    giant.write_bytes(_png_declaring(100_000, 100_000))
    with pytest.raises(InputError, match="giant.png.*(limit|too large)"):
        read_frames(giant)


def test_dicom_declaring_a_huge_frame(tmp_path):
    import pydicom

    ds = pydicom.dcmread(DICOM / "MR_small.dcm")
    ds.Rows, ds.Columns = 60000, 60000
    ds.save_as(tmp_path / "huge.dcm")
    with pytest.raises(InputError, match="huge.dcm.*limit"):
        read_frames(tmp_path / "huge.dcm")


def test_bit_depths_and_edge_sizes(cnn_bundle, tmp_path, breastmnist):
    img = breastmnist["test_images"][0]
    with load(cnn_bundle) as pipe:
        want = pipe.predict(img).index
        Image.fromarray(img > 100).save(tmp_path / "1bit.png")  # 1-bit: read as 0/255 grey, documented
        assert read_frames(tmp_path / "1bit.png")[0].dtype == np.uint8
        pipe.predict(tmp_path / "1bit.png")
        # The spec scales by 1/255, so its answer depends on absolute values: a float TIFF already in [0, 1] and a
        # 16-bit PNG are refused with the fix (issue 20.7; before, each got an answer from values the model never
        # saw), and the fix applied gives the uint8 frame's answer
        Image.fromarray(img.astype(np.float32) / 255, "F").save(tmp_path / "f32.tif")
        with pytest.raises(InputError, match=r"already scaled to \[0, 1\].*x 255"):
            pipe.predict(tmp_path / "f32.tif")
        assert pipe.predict(read_frames(tmp_path / "f32.tif")[0] * 255).index == want
        Image.fromarray(img.astype(np.uint16) * 257).save(tmp_path / "u16.png")
        with pytest.raises(InputError, match=r"frame // 257"):
            pipe.predict(tmp_path / "u16.png")
        assert pipe.predict(read_frames(tmp_path / "u16.png")[0] // 257).index == want
        assert pipe.predict(np.array([[7]], np.uint8)).probabilities.shape == (2,)  # 1x1: resized, valid
        np.save(tmp_path / "nan.npy", np.full((28, 28), np.nan, np.float32))
        with pytest.raises(InputError, match="NaN"):
            pipe.predict(tmp_path / "nan.npy")
        np.save(tmp_path / "empty.npy", np.zeros((0, 0), np.uint8))
        with pytest.raises(InputError, match="empty"):
            pipe.predict(tmp_path / "empty.npy")
        with pytest.raises(InputError, match="pixel limit"):
            pipe.predict(np.zeros((9000, 9000), np.uint8))


# --- fuzzing (bounded; failures found are kept in tests/fixtures/fuzz) -----------------------

@pytest.fixture(scope="module")
def seed_files(tmp_path_factory, busi):
    d = tmp_path_factory.mktemp("seeds")
    Image.fromarray(busi["images"][3]).resize((64, 64)).save(d / "s.png")
    Image.fromarray(busi["images"][3]).resize((64, 64)).save(d / "s.jpg")
    return [(d / "s.png").read_bytes(), (d / "s.jpg").read_bytes(), (DICOM / "MR_small.dcm").read_bytes()]


def _decode_or_input_error(data: bytes, suffix: str, where: Path) -> None:
    path = where / f"case{suffix}"
    path.write_bytes(data)
    try:
        frames = read_frames(path)
    except InputError:
        return
    for f in frames:
        assert isinstance(f, np.ndarray) and f.ndim in (2, 3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_decoders(seed_files, tmp_path, data):
    k = data.draw(st.integers(0, len(seed_files) - 1))
    raw = bytearray(seed_files[k])
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            raw = raw[:pos]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
    _decode_or_input_error(bytes(raw), [".png", ".jpg", ".dcm"][k], tmp_path)


def test_fuzz_regression_corpus(tmp_path):
    """Inputs that once crashed a decoder: each must now decode or fail with a clear InputError."""
    for case in sorted(FUZZ_CORPUS.iterdir()):
        if case.suffix in (".png", ".jpg", ".dcm", ".tif", ".npy"):
            _decode_or_input_error(case.read_bytes(), case.suffix, tmp_path)


_scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=4), max_leaves=12)
_op = st.fixed_dictionaries({"op": st.sampled_from(["resize", "scale", "window", "normalize", "clahe", "nope"])},
                            optional={"size": _json, "factor": _json, "center": _json, "width": _json,
                                      "mean": _json, "std": _json, "interpolation": _json, "keep_aspect": _json})


@settings(max_examples=300, deadline=None)
@given(st.one_of(_json, st.lists(_op, max_size=5)))
def test_fuzz_preprocess_spec_parser(spec):
    try:
        validate_spec(spec)
    except InputError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["schema_version", "model", "input", "output", "preprocess", "artifacts",
                                         "files"]), _json, max_size=7))
def test_fuzz_manifest_loader(cnn_bundle, tmp_path, manifest):
    dst = tmp_path / "fz"
    if not dst.exists():
        shutil.copytree(cnn_bundle, dst)
    (dst / "edgemed.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError):
        Bundle.open(dst)


# --- crash safety ----------------------------------------------------------------------------

_CONVERT = [sys.executable, "-m", "edgemed.cli", "convert"]


def _convert_cmd(out: Path) -> list[str]:
    from edgemed.samples import calibration_set, shipped_model

    weights, card = shipped_model("unet_busi")
    return _CONVERT + [str(weights), "-o", str(out), "--task", "segmentation", "--input-shape", "1x1x128x128",
                       "--arch", "unet", "--arch-args", json.dumps(card["arch_args"]), "--preprocess",
                       str(out.parent / "spec.json"), "--calib", str(calibration_set("segmentation")), "--to",
                       "onnx,openvino", "--precision", "fp32,int8", "--force"]


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial" in p.name or ".old-" in p.name]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
@pytest.mark.parametrize("previous", [False, True])
def test_interrupted_convert_leaves_previous_bundle_or_none(cnn_bundle, tmp_path, sig, previous):
    """Ctrl-C, SIGTERM (timeout, CI cancellation, container stop) and SIGKILL mid-conversion: the previous
    bundle or none, and nothing left in the bundle's folder or the temporary folder."""
    from edgemed.owned_dirs import remove_abandoned
    from edgemed.samples import shipped_model

    (tmp_path / "spec.json").write_text(json.dumps(shipped_model("unet_busi")[1]["preprocess"]))
    out = tmp_path / "bundle"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    if previous:
        shutil.copytree(cnn_bundle, out)
        before = (out / "edgemed.json").read_bytes()
    proc = subprocess.Popen(_convert_cmd(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(scratch)})
    time.sleep(6)  # mid-way: exported, calibrating or quantizing
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig != signal.SIGKILL and proc.returncode != 0:
        assert f"interrupted ({signal.Signals(sig).name})" in err and proc.returncode == 128 + sig
    if previous:
        assert (out / "edgemed.json").read_bytes() == before
        Bundle.open(out)
    elif out.exists():  # the conversion had already finished before the signal
        Bundle.open(out)
    if sig != signal.SIGKILL:
        assert not _leftovers(tmp_path) and not list(scratch.glob("edgemed-*"))
    else:  # SIGKILL gives no chance to clean up: the next conversion to the same target repairs it
        from edgemed.bundle import recover_interrupted

        recover_interrupted(out)
        remove_abandoned(scratch, "edgemed-quant-*")  # what the next conversion does first
        assert not _leftovers(tmp_path) and not list(scratch.glob("edgemed-*"))
        if previous:
            assert (out / "edgemed.json").read_bytes() == before


def test_disk_full_while_writing_leaves_previous_bundle(tmp_path, monkeypatch, cnn_bundle):
    out = tmp_path / "bundle"
    shutil.copytree(cnn_bundle, out)
    before = (out / "edgemed.json").read_bytes()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", full)
    with pytest.raises(OSError, match="No space left"):
        convert_shipped("cnn_breastmnist", out, force=True)
    assert (out / "edgemed.json").read_bytes() == before and not _leftovers(tmp_path)


def test_crash_between_the_two_renames_restores_the_previous_bundle(tmp_path, cnn_bundle):
    from edgemed.bundle import recover_interrupted

    out = tmp_path / "bundle"
    shutil.copytree(cnn_bundle, tmp_path / ".bundle.old-abc123")  # the state a kill between renames leaves
    (tmp_path / ".bundle.partial-xyz").mkdir()
    (tmp_path / ".bundle.partial-xyz" / ".edgemed-owner").write_text("999999999")
    done = recover_interrupted(out)
    assert any("restored" in d for d in done) and Bundle.open(out) and not _leftovers(tmp_path)
