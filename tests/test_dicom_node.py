"""edgemed listen between a scanner (pynetdicom, played by the test) and a real PACS (Orthanc, on loopback)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import DICOM, free_ports

pynetdicom = pytest.importorskip("pynetdicom", reason="pynetdicom not installed (pip install 'edgemed[dicom]')")
pydicom = pytest.importorskip("pydicom")
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
pytestmark = pytest.mark.skipif(not Path(ORTHANC).exists(),
                                reason="Orthanc is not installed (.ci/run installs the Debian package)")
SOURCES = ["CT_small.dcm", "MR_small.dcm", "examples_palette.dcm"]


class Orthanc:
    def __init__(self, root: Path, dicom_port: int, http_port: int, check_called_aet: bool = False) -> None:
        self.root, self.dicom_port, self.http_port = root, dicom_port, http_port
        self.url = f"http://127.0.0.1:{http_port}"
        root.mkdir(parents=True, exist_ok=True)
        (root / "config.json").write_text(json.dumps({
            "Name": "edgemed-test", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
            "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomServerEnabled": True, "HttpServerEnabled": True,
            "Plugins": [], "DicomCheckCalledAet": check_called_aet, "DicomAlwaysAllowStore": True}))
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen([ORTHANC, str(self.root / "config.json")], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/system", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        pytest.fail("Orthanc did not start within 60 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def instances(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/instances?expand", timeout=10) as r:
            return json.loads(r.read())


def _send(port: int, path: Path) -> int:
    """The scanner: one C-STORE to edgemed listen; returns the status it answered."""
    ds = pydicom.dcmread(path)
    ae = pynetdicom.AE(ae_title="SCANNER")
    ae.add_requested_context(ds.SOPClassUID, [str(ds.file_meta.TransferSyntaxUID)])
    assoc = ae.associate("127.0.0.1", port, ae_title="EDGEMED")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
        return int(status.Status)
    finally:
        assoc.release()


class Listen:
    """``edgemed listen`` as a subprocess sending to ``send``; ``log`` holds its output once it has stopped."""

    def __init__(self, bundle: Path, port: int, send: str, queue: Path) -> None:
        self.port, self.log = port, ""
        cmd = [sys.executable, "-m", "edgemed.cli", "listen", str(bundle), "--port", str(port), "--send", send,
               "--queue", str(queue)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)

    def __enter__(self) -> Listen:
        if not _wait(lambda: socket.socket().connect_ex(("127.0.0.1", self.port)) == 0, 60):
            self.__exit__()
            pytest.fail(f"listen did not start: {self.log[-2000:]}")
        return self

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.log, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.log, _ = self.proc.communicate(timeout=10)


def _wait(predicate, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


def test_results_reach_orthanc_and_survive_its_restart(unet_bundle, tmp_path):
    dicom_port, http_port, node_port = free_ports(3)
    pacs = Orthanc(tmp_path / "orthanc", dicom_port, http_port)
    pacs.start()
    queue = tmp_path / "outbox"
    try:
        with Listen(unet_bundle, node_port, f"ORTHANC@127.0.0.1:{dicom_port}", queue) as node:
            _exchange(pacs, node_port, queue, tmp_path)
    finally:
        pacs.stop()
    assert "no pixel data" in node.log  # the refusal was logged in one line
    assert "received again" in node.log


def _exchange(pacs: Orthanc, node_port: int, queue: Path, tmp_path: Path) -> None:
    for name in SOURCES[:2]:
        assert _send(node_port, DICOM / name) == 0x0000
    assert _wait(lambda: len(pacs.instances()) == 6), pacs.instances()
    # the PACS goes down: results wait in the outbox, and arrive when it is back
    pacs.stop()
    assert _send(node_port, DICOM / SOURCES[2]) == 0x0000
    assert _wait(lambda: len(list(queue.glob("*.dcm"))) == 3, 60)
    time.sleep(3)  # a few failed retries while it is down
    pacs.start()
    assert _wait(lambda: len(pacs.instances()) == 9, 90), pacs.instances()
    assert _wait(lambda: not list(queue.glob("*.dcm")), 30)
    held = pacs.instances()
    uids = [i["MainDicomTags"]["SOPInstanceUID"] for i in held]
    assert len(set(uids)) == len(uids) == 9  # none lost, none duplicated
    # bad input: an object without pixel data gets a failure status, and the node goes on
    ds = pydicom.dcmread(DICOM / "CT_small.dcm")
    del ds.PixelData
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "nopixels.dcm")
    assert _send(node_port, tmp_path / "nopixels.dcm") == 0xC000
    with socket.create_connection(("127.0.0.1", node_port), timeout=5) as peer:  # a peer that sends garbage
        peer.sendall(os.urandom(4096))
    # the node still serves, and a source sent again stores nothing new (issue 20.10; before: 3 more instances)
    assert _send(node_port, DICOM / "MR_small.dcm") == 0x0000
    time.sleep(3)
    assert len(pacs.instances()) == 9 and not list(queue.glob("*.dcm"))
    with urllib.request.urlopen(f"{pacs.url}/series?expand", timeout=10) as r:
        series = json.loads(r.read())
    listing = "\n".join(f"{x['MainDicomTags'].get('Modality')} | {x['MainDicomTags'].get('SeriesDescription')}"
                        f" | {len(x['Instances'])} instance(s)" for x in series)
    assert sorted(x["MainDicomTags"].get("Modality") for x in series).count("SEG") == 3
    (tmp_path / "orthanc_listing.txt").write_text(listing + "\n")


def test_a_pacs_that_rejects_the_association_loses_nothing(unet_bundle, tmp_path):
    dicom_port, http_port, node_port = free_ports(3)
    pacs = Orthanc(tmp_path / "orthanc", dicom_port, http_port, check_called_aet=True)
    pacs.start()
    queue = tmp_path / "outbox"
    try:
        with Listen(unet_bundle, node_port, f"NOT_ORTHANC@127.0.0.1:{dicom_port}", queue) as node:
            assert _send(node_port, DICOM / "CT_small.dcm") == 0x0000
            assert _wait(lambda: len(list(queue.glob("*.dcm"))) == 3, 60)
            time.sleep(3)  # retries, each rejected
            assert len(list(queue.glob("*.dcm"))) == 3 and not pacs.instances()
    finally:
        pacs.stop()
    assert "association not established" in node.log and "wait in" in node.log


DCMTK = shutil.which("storescu") and shutil.which("echoscu") and shutil.which("dcmcjpeg")


@pytest.mark.skipif(not DCMTK, reason="dcmtk is not installed (.ci/run installs it)")
def test_a_scanner_echoes_and_sends_compressed_and_anonymous_images(unet_bundle, tmp_path):
    """Issue 20.5, 20.9-20.11 with dcmtk as the scanner: C-ECHO answers; JPEG baseline and JPEG 2000 ultrasound and
    a CT without PatientID are analysed; a re-sent source is stored once; one log line per image and per result."""
    jpeg = tmp_path / "us_jpeg_baseline.dcm"
    subprocess.run(["dcmcjpeg", "+eb", str(DICOM / "examples_rgb_color.dcm"), str(jpeg)], check=True, timeout=60)
    assert str(pydicom.dcmread(jpeg).file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.50"
    anonymous = pydicom.dcmread(DICOM / "CT_small.dcm")
    del anonymous.PatientID
    anonymous.SOPInstanceUID = pydicom.uid.generate_uid()
    anonymous.save_as(tmp_path / "ct_anonymous.dcm")
    # storescu proposes each file's compressed syntax (as a scanner sending what it compressed does), and sends as is
    sources = [(jpeg, ["-xy"]), (DICOM / "examples_jpeg2k.dcm", ["-xv"]), (tmp_path / "ct_anonymous.dcm", [])]
    dicom_port, http_port, node_port = free_ports(3)
    pacs = Orthanc(tmp_path / "orthanc", dicom_port, http_port)
    pacs.start()
    queue = tmp_path / "outbox"
    try:
        with Listen(unet_bundle, node_port, f"ORTHANC@127.0.0.1:{dicom_port}", queue) as node:
            echo = subprocess.run(["echoscu", "-aec", "EDGEMED", "127.0.0.1", str(node_port)], capture_output=True,
                                  text=True, timeout=60)
            assert echo.returncode == 0, echo.stdout + echo.stderr  # before: no Verification SCP
            for path, propose in sources:  # before: "No Acceptable Presentation Contexts" for the compressed two
                sent = subprocess.run(["storescu", *propose, "-aec", "EDGEMED", "127.0.0.1", str(node_port),
                                       str(path)], capture_output=True, text=True, timeout=120)
                assert sent.returncode == 0 and "E:" not in sent.stderr, (path.name, sent.stderr)
            assert _wait(lambda: len(pacs.instances()) == 9, 90), pacs.instances()
            assert len({i["MainDicomTags"]["SOPInstanceUID"] for i in pacs.instances()}) == 9
            again = subprocess.run(["storescu", "-xy", "-aec", "EDGEMED", "127.0.0.1", str(node_port), str(jpeg)],
                                   capture_output=True, text=True, timeout=120)
            assert again.returncode == 0
            time.sleep(3)
            assert len(pacs.instances()) == 9 and not list(queue.glob("*.dcm"))  # sent once
    finally:
        pacs.stop()
    lines = [ln for ln in node.log.splitlines() if "edgemed listen:" in ln]  # the node's log, not the exit line
    received = [ln for ln in lines if "queued" in ln]
    delivered = [ln for ln in lines if "delivered to ORTHANC" in ln]
    assert len(received) == 3 and len(delivered) == 9 and sum("received again" in ln for ln in lines) == 1
    assert all(": seg, sr, sc queued" in ln for ln in received), received
    assert len(lines) == 1 + 3 + 9 + 1, "\n".join(lines)  # start, images, results, the repeat: nothing else


def test_an_ecg_waveform_reaches_the_pacs_as_its_beat_report(rr_bundle, tmp_path):
    """A cart sends a 10-minute ECG to the node running a beat classifier: the PACS receives one Comprehensive SR in
    the ECG's study, the one ``predict`` writes (same UID), and a second send of the ECG stores nothing new."""
    from edgemed.io.signals import read_signal
    from edgemed.samples import ecg_record

    from .dicom_waveform import write_ecg_waveform

    sig = read_signal(ecg_record())
    ecg = write_ecg_waveform(sig.samples, sig.fs, sig.leads, tmp_path / "mitdb213.dcm")
    subprocess.run([sys.executable, "-m", "edgemed.cli", "predict", str(rr_bundle), str(ecg), "--out",
                    str(tmp_path / "local")], check=True, capture_output=True, timeout=300)
    local = pydicom.dcmread(tmp_path / "local" / "mitdb213.sr.dcm")
    dicom_port, http_port, node_port = free_ports(3)
    pacs = Orthanc(tmp_path / "orthanc", dicom_port, http_port)
    pacs.start()
    try:
        with Listen(rr_bundle, node_port, f"ORTHANC@127.0.0.1:{dicom_port}", tmp_path / "outbox") as node:
            assert _send(node_port, ecg) == 0x0000
            assert _wait(lambda: len(pacs.instances()) == 1), pacs.instances()
            assert _send(node_port, ecg) == 0x0000
            time.sleep(3)
            held = pacs.instances()
    finally:
        pacs.stop()
    assert len(held) == 1 and held[0]["MainDicomTags"]["SOPInstanceUID"] == local.SOPInstanceUID
    assert "beats in 600 s" in node.log and "received again" in node.log
