"""The DICOM node (``edgemed listen``) on hostile peers: C-STOREs of datasets whose elements are wrong in every way
(sizes, bit depths, photometric interpretation, frame counts, rescale, pixel data cut or padded, UIDs), association
requests with damaged PDUs (lengths, AE titles, presentation contexts, protocol version), and bytes that are not
DICOM. One node per module (a subprocess on loopback, no destination: results stay in its outbox). Each object
gets a status, each refusal is one logged line naming an EdgemedError (never an "unexpected" exception), the node
keeps analysing a good image afterwards, and its outbox only ever holds complete DICOM files."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ..conftest import DICOM, free_ports
from . import net
from . import strategies as fs
from .harness import count, fuzz_settings

pynetdicom = pytest.importorskip("pynetdicom", reason="pynetdicom not installed (pip install 'edgemed[dicom]')")
pydicom = pytest.importorskip("pydicom")
pytestmark = pytest.mark.fuzz
SEEDS = ["CT_small.dcm", "MR_small.dcm", "liver_1frame.dcm", "examples_palette.dcm"]


@pytest.fixture(scope="module")
def node(cnn_bundle, tmp_path_factory):
    port = free_ports(1)[0]
    tmp = tmp_path_factory.mktemp("node")
    log = tmp / "listen.log"
    with open(log, "wb") as out:  # a file, not an unread pipe that fills and blocks the node
        proc = subprocess.Popen([sys.executable, "-m", "edgemed.cli", "listen", str(cnn_bundle), "--port", str(port),
                                 "--queue", str(tmp / "outbox")], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        if not net.wait_port(port, 60, lambda: proc.poll() is None):
            pytest.fail(f"edgemed listen did not start: {log.read_text()[-2000:]}")
        yield {"port": port, "proc": proc, "log": log, "outbox": tmp / "outbox"}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _store(port: int, ds, timeout: float = 30) -> int | None:
    """One C-STORE as a scanner sends it; the status, or None where the association or the send failed."""
    ae = pynetdicom.AE(ae_title="FUZZER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "1.2.840.10008.1.2.1"))
    sop = str(getattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.7"))
    try:
        ae.add_requested_context(sop, [syntax])
    except (ValueError, TypeError):
        return None
    assoc = ae.associate("127.0.0.1", port, ae_title="EDGEMED")
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_store(ds)
        return int(status.Status) if status is not None and "Status" in status else None
    finally:
        if assoc.is_established:
            assoc.release()


def _good_store(node) -> None:
    """The node still analyses a good image: success, and two more complete results (SR, SC) in its outbox.
    Associations that pynetdicom's state machine dropped (see edgemed.pacs.node.ACSE_TIMEOUT_S) may hold the
    node's association slots until its ACSE timer frees them: a good peer gets in within that time."""
    from edgemed.pacs.node import ACSE_TIMEOUT_S

    before = len(list(node["outbox"].glob("*.dcm")))
    ds = pydicom.dcmread(DICOM / "examples_rgb_color.dcm")
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    deadline = time.monotonic() + 2 * ACSE_TIMEOUT_S + 10
    while (status := _store(node["port"], ds)) is None and time.monotonic() < deadline:
        time.sleep(1)
    assert status == 0x0000, node["log"].read_text(errors="replace")[-2000:]
    deadline = time.monotonic() + 30
    while len(list(node["outbox"].glob("*.dcm"))) < before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(list(node["outbox"].glob("*.dcm"))) >= before + 2
    _clean(node)


def _clean(node) -> None:
    assert node["proc"].poll() is None, "the node died"
    log = node["log"].read_text(errors="replace")
    bad = [ln for ln in log.splitlines() if "not analysed (unexpected" in ln]  # edgemed.pacs.node's marker
    assert not bad, bad[:3]
    assert not (node["outbox"].parent / "outbox.sr.dcm").exists(), "results written beside the outbox"
    for f in node["outbox"].iterdir():
        assert f.suffix == ".dcm" and not f.name.startswith("."), f"left in the outbox: {f.name}"
        pydicom.dcmread(f)  # complete


_VALUES = {
    "Rows": [0, 1, 65535, 3, "abc"], "Columns": [0, 1, 65535, 7], "BitsAllocated": [0, 1, 3, 12, 64, 8, 16, 32],
    "BitsStored": [0, 1, 33, 12], "HighBit": [0, 31, 200], "PixelRepresentation": [0, 1, 2],
    "SamplesPerPixel": [0, 1, 2, 3, 4], "PhotometricInterpretation": ["MONOCHROME1", "RGB", "PALETTE COLOR",
                                                                        "YBR_FULL", "", "NONSENSE"],
    "NumberOfFrames": [0, 1, 2, 1000000, "x", -1], "RescaleSlope": [0, -1, 1e308, "nan", "x"],
    "RescaleIntercept": [1e308, -1e308, "inf"], "Modality": ["", "SEG", "SR", "US", "X" * 16],
    "SOPInstanceUID": ["1." * 40, "x", "1.2/../../x", "1.2.3", " 1.2"], "WindowCenter": ["", "a\\b"],
    "PixelSpacing": ["0\\0", "x", ""],
    "PlanarConfiguration": [0, 1, 5],
}


@st.composite
def hostile_datasets(draw):
    ds = pydicom.dcmread(DICOM / draw(st.sampled_from(SEEDS)))
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    for key in draw(st.lists(st.sampled_from(sorted(_VALUES) + ["PixelData"] * 3), min_size=1, max_size=3)):
        if key == "PixelData":
            raw = bytes(ds.PixelData) if "PixelData" in ds else b""
            how = draw(st.sampled_from(["cut", "pad", "empty", "delete", "odd"]))
            if how == "delete":
                if "PixelData" in ds:
                    del ds.PixelData
                continue
            ds.PixelData = {"cut": raw[:len(raw) // 2], "pad": raw + raw[:1000], "empty": b"",
                            "odd": raw[:-1]}[how]
        elif draw(st.integers(0, 5)) == 0 and key in ds:
            delattr(ds, key)
        else:
            try:
                setattr(ds, key, draw(st.sampled_from(_VALUES[key])))
            except (ValueError, TypeError, OverflowError):
                pass
    return ds


def _encodable(ds) -> bool:
    """Whether pydicom (the sending side) can write the dataset at all: one it cannot would reach the node as a
    broken message from the fuzzer's own client, which tests pynetdicom's client, not the node."""
    import io

    try:
        ds.save_as(io.BytesIO(), enforce_file_format=True)
        return bool(getattr(ds, "SOPClassUID", None)) and bool(getattr(ds, "SOPInstanceUID", None))
    except Exception:  # noqa: BLE001
        return False


@fuzz_settings(40, deadline_s=60)
@given(ds=hostile_datasets())
def test_hostile_datasets(node, ds):
    if not _encodable(ds):
        count("listen (C-STORE datasets)", "not encodable by the sender")
        return
    status = _store(node["port"], ds)
    count("listen (C-STORE datasets)", "result" if status == 0 else "refused")
    _clean(node)


# --- association requests ---------------------------------------------------------------------------------

def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def associate_rq(called: bytes = b"EDGEMED", calling: bytes = b"FUZZER",
                 abstract: bytes = b"1.2.840.10008.5.1.4.1.1.2", transfer: bytes = b"1.2.840.10008.1.2.1",
                 context_id: int = 1, version: int = 1, max_pdu: int = 16384) -> bytes:
    """A valid A-ASSOCIATE-RQ PDU (PS3.8 9.3.2), built by hand so every field can be bent."""
    body = struct.pack(">HH", version, 0) + called.ljust(16)[:16] + calling.ljust(16)[:16] + bytes(32)
    body += _item(0x10, b"1.2.840.10008.3.1.1.1")
    body += _item(0x20, struct.pack(">BBBB", context_id, 0, 0, 0) + _item(0x30, abstract) + _item(0x40, transfer))
    body += _item(0x50, _item(0x51, struct.pack(">I", max_pdu)))
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


_fields = st.fixed_dictionaries({}, optional={
    "called": st.sampled_from([b"", b" " * 16, b"\x00" * 16, b"WRONG", "é".encode() * 8]),
    "calling": st.sampled_from([b"", b"\xff" * 16]),
    "abstract": st.sampled_from([b"", b"1.2.3", b"x" * 70, b"1.2.840.10008.5.1.4.1.1.66.4", b"\x00"]),
    "transfer": st.sampled_from([b"", b"1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.5", b"9" * 64]),
    "context_id": st.sampled_from([0, 2, 255]), "version": st.sampled_from([0, 2, 65535]),
    "max_pdu": st.sampled_from([0, 1, 2**32 - 1]),
})


@fuzz_settings(150, deadline_s=30)
@given(fields=_fields, data=st.data())
def test_association_requests(node, fields, data):
    pdu = associate_rq(**fields)
    if data.draw(st.booleans()):
        lengths = [(2, 4)] + [(i + 2, 2) for i in range(74, len(pdu) - 3) if pdu[i] in (0x10, 0x20, 0x30, 0x40, 0x50)]
        pdu = fs.mutate(pdu, data.draw, max_ops=3, length_fields=[(at, w) for at, w in lengths])
    tail = data.draw(st.sampled_from([b"", b"", os.urandom(64), b"\x04\x00\x00\x00\x00\x10" + os.urandom(16)]))
    answer = _exchange(node["port"], pdu + tail)
    count("listen (association requests)", "result" if answer[:1] == b"\x02" else "refused")
    assert node["proc"].poll() is None, "the node died"



@fuzz_settings(200, deadline_s=30)
@given(garbage=st.binary(min_size=1, max_size=2048))
def test_bytes_that_are_not_dicom(node, garbage):
    _exchange(node["port"], garbage)
    count("listen (garbage)", "refused")
    assert node["proc"].poll() is None, "the node died"


def _exchange(port: int, data: bytes, timeout: float = 0.5) -> bytes:
    """Send bytes, stop sending, read the node's first answer (A-ASSOCIATE-AC/RJ, A-ABORT, or a close). Silence
    means the association died inside pynetdicom (its ACSE timer closes it, see _good_store): not waited for."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            return s.recv(65536)
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            return b""


def test_still_analysing_after_the_fuzzing(node):
    _good_store(node)
