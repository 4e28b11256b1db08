"""``edgemed listen``: a DICOM node that infers on what the scanner or PACS sends and sends the results on.

A C-STORE SCP (pynetdicom) receives images and ECG waveforms; each is routed by modality to a bundle, run
through the same pipeline as ``predict`` and turned into SEG/SR/SC (:mod:`edgemed.pacs.results`), or for a
waveform and a beat classifier, every beat into one SR that points into the waveform
(:mod:`edgemed.pacs.beat_report`). The results
go into an on-disk outbox first (written whole, by atomic rename), and a sender thread C-STOREs them
to the destination and deletes each only after the destination confirmed it. A destination that is
down, refuses the association or fails a store leaves the file in the outbox, retried with backoff,
so a PACS restart loses nothing; results keep their SOP Instance UIDs across retries, so a PACS
never holds two copies of one. A received object that cannot be analysed (no pixel data, a result
object, a decoding failure) gets a failure status back to the sender and one log line; the node
goes on.

Sent once: a result's UIDs follow from its source instance and the artifact
(:func:`edgemed.pacs.results.result_uid`), and every UID the destination confirmed is recorded in
the outbox (``.delivered/``), so a source sent again (a scanner retrying, a study re-pushed) is
answered with success and its results are not stored a second time. Deleting ``.delivered/`` sends
them again (the PACS then holds the same UIDs as before).

What a scanner or a PACS administrator expects of a node: C-ECHO (the Verification service) and
every transfer syntax the installed decoders read (JPEG baseline and extended, JPEG-LS, JPEG 2000,
RLE, deflate, besides the uncompressed ones; asked of pydicom at start). The log has one line per
received image, one per delivered result and one per failure.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EdgemedError, OptionError

LOG = logging.getLogger("edgemed.listen")
FAILURE_CANNOT_UNDERSTAND = 0xC000  # C-STORE "cannot understand": the sender learns this object was not analysed
FAILURE_OUT_OF_RESOURCES = 0xA700
# pynetdicom 3.0 meets some malformed A-ASSOCIATE-RQs (an even presentation context ID, a called AE title of spaces)
# with an exception in its state machine thread; the connection is then held until the ACSE timer fires (30 s by
# default) and counts against the association limit (10 by default), so ten such requests a minute kept every
# scanner out (found by the fuzz suite). A shorter timer and more room bound that; it is pynetdicom's to fix.
ACSE_TIMEOUT_S = 10.0
MAX_ASSOCIATIONS = 32


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``AE@HOST:PORT``."""
        try:
            ae, rest = text.split("@", 1)
            host, port = rest.rsplit(":", 1)
            dest = cls(ae.strip(), host.strip(), int(port))
        except ValueError as exc:
            raise OptionError(f"--send {text!r} is not AE@HOST:PORT", "write e.g. ORTHANC@127.0.0.1:4242") from exc
        if not 1 <= len(dest.ae_title) <= 16 or not 1 <= dest.port <= 65535:
            raise OptionError(f"--send {text!r}: AE titles have 1-16 characters, ports are 1-65535",
                              "write e.g. ORTHANC@127.0.0.1:4242")
        return dest


@dataclass
class Node:
    pipes: dict[str, Any]  # modality ("*" for any) -> Pipeline
    destination: Destination | None
    outbox: Path
    kinds: tuple[str, ...] = ("seg", "sr", "sc")
    retry_s: float = 2.0
    received: int = 0
    refused: int = 0
    sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def pipe_for(self, modality: str):
        return self.pipes.get(modality) or self.pipes.get("*")

    # -- what was delivered ---------------------------------------------------------------------
    @property
    def ledger(self) -> Path:
        return self.outbox / ".delivered"

    def delivered(self, uid: str) -> bool:
        return (self.ledger / uid).is_file()

    def _record_delivery(self, uid: str) -> None:
        self.ledger.mkdir(parents=True, exist_ok=True)
        (self.ledger / uid).touch()

    def _already_sent(self, pipe, ds) -> bool:
        """Every result this source would get from this artifact has been delivered before."""
        from .results import Algorithm, kinds_made, result_uid

        kinds = kinds_made(pipe, self.kinds)
        algo = Algorithm.of(pipe)
        return bool(kinds) and all(self.delivered(result_uid(ds, algo, k)) for k in kinds)

    # -- receiving ------------------------------------------------------------------------------
    def handle_store(self, event) -> int:
        """One received object: analysed and queued (0x0000), or refused with a failure status."""
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
        except Exception as exc:  # noqa: BLE001 - a peer that sends garbage
            LOG.warning("refused an object that does not decode: %s", (str(exc).splitlines() or [""])[0][:200])
            self.refused += 1
            return FAILURE_CANNOT_UNDERSTAND
        uid = str(getattr(ds, "SOPInstanceUID", ""))
        if not _valid_uid(uid):  # it names the results in the outbox: "" wrote them beside it, "a/../b" elsewhere
            LOG.warning("refused an object whose SOP Instance UID %r is not a UID", uid[:80])
            self.refused += 1
            return FAILURE_CANNOT_UNDERSTAND
        pipe = self.pipe_for(str(getattr(ds, "Modality", "")))
        if pipe is None:
            LOG.warning("%s: no bundle for modality %s", uid, getattr(ds, "Modality", "?"))
            self.refused += 1
            return FAILURE_CANNOT_UNDERSTAND
        if self.destination is not None and "SOPInstanceUID" in ds and self._already_sent(pipe, ds):
            LOG.info("%s: received again; its results were delivered before, not sent twice", uid)
            self.received += 1
            return 0x0000
        with tempfile.TemporaryDirectory(prefix="edgemed-in-") as tmp:
            src = Path(tmp) / "in.dcm"
            try:
                ds.save_as(src, enforce_file_format=True)
                with self._lock:  # one pipeline call at a time per node (pynetdicom may run handlers concurrently)
                    what, written = self._analyse(pipe, src, uid)
            except EdgemedError as exc:
                LOG.warning("%s: not analysed: %s", uid, str(exc).replace(str(src), "the object"))
                self.refused += 1
                return FAILURE_CANNOT_UNDERSTAND
            except Exception as exc:  # noqa: BLE001 - the node must survive any one object
                # not an EdgemedError: a defect in edgemed (the fuzz suite fails on this line), logged as an error
                LOG.error("%s: not analysed (unexpected %s: %s)", uid, type(exc).__name__,
                          (str(exc).splitlines() or [""])[0][:200])
                self.refused += 1
                return FAILURE_CANNOT_UNDERSTAND
        self.received += 1
        LOG.info("%s: %s %s: %s queued", uid, getattr(ds, "Modality", "?"), what,
                 ", ".join(p.name.rsplit(".", 2)[-2] for p in written) or "nothing")  # UID.seg.dcm -> seg
        return 0x0000

    def _analyse(self, pipe, src: Path, uid: str) -> tuple[str, list[Path]]:
        """One saved object through its pipeline into the outbox: an image's frames (SEG/SR/SC), or a waveform's
        beats (an SR pointing into it). Returns what was read, for the log line, and the files written."""
        from ..input_kinds import input_kind
        from .results import kinds_made, write_objects

        if input_kind(pipe.input_kind).recordings:
            from .beat_report import write_beat_sr

            record = pipe.beats(src)
            written = [write_beat_sr(pipe, src, record, self.outbox / uid)] if kinds_made(pipe, self.kinds) else []
            return f"{len(record.beats)} beats in {record.duration_s:.0f} s", written
        from ..io.images import read_frames

        frames = read_frames(src)
        results = [pipe.predict(f) for f in frames]
        written = write_objects(pipe, src, frames, results, self.outbox / uid, self.kinds, strict=False,
                                note=lambda s: LOG.info("%s: %s", uid, s.replace(str(src), "it")))
        return str(frames[0].shape if frames else ""), written

    # -- sending --------------------------------------------------------------------------------
    def pending(self) -> list[Path]:
        return sorted(p for p in self.outbox.glob("*.dcm") if not p.name.startswith("."))

    def send_pending(self) -> int:
        """Send what waits in the outbox; returns how many were delivered. Stops at the first failure."""
        import pydicom
        from pynetdicom import AE
        from pynetdicom.sop_class import (
            Comprehensive3DSRStorage,
            ComprehensiveSRStorage,
            SecondaryCaptureImageStorage,
            SegmentationStorage,
        )

        files = self.pending()
        if not files or self.destination is None:
            return 0
        ae = AE(ae_title="EDGEMED")
        for sop in (SegmentationStorage, Comprehensive3DSRStorage, ComprehensiveSRStorage,
                    SecondaryCaptureImageStorage):  # Comprehensive SR: the beats of an ECG waveform
            ae.add_requested_context(sop, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        d = self.destination
        assoc = ae.associate(d.host, d.port, ae_title=d.ae_title)
        if not assoc.is_established:
            LOG.warning("%s@%s:%d: association not established; %d result(s) wait in %s", d.ae_title, d.host,
                        d.port, len(files), self.outbox)
            return 0
        done = 0
        try:
            for path in files:
                result = pydicom.dcmread(path)
                uid = str(result.SOPInstanceUID)
                if self.delivered(uid):  # delivered before (the same source sent again): never stored twice
                    path.unlink()
                    continue
                status = assoc.send_c_store(result)
                if status is None or getattr(status, "Status", 0xFFFF) != 0x0000:
                    LOG.warning("%s: store failed (%s); kept for retry", path.name,
                                "no response" if status is None else hex(status.Status))
                    break
                self._record_delivery(uid)
                path.unlink()
                LOG.info("%s: delivered to %s (%s)", path.name, d.ae_title, uid)
                done += 1
        finally:
            if assoc.is_established:
                assoc.release()
        self.sent += done
        return done

    def _sender(self) -> None:
        delay = self.retry_s
        while not self._stop.is_set():
            try:
                delivered = self.send_pending()
            except Exception as exc:  # noqa: BLE001 - a network error must not kill the sender
                LOG.warning("sending failed: %s", str(exc).splitlines()[0][:200])
                delivered = 0
            if self.pending():
                delay = self.retry_s if delivered else min(delay * 2, 30.0)
            else:
                delay = self.retry_s
            self._stop.wait(0.2 if not self.pending() else delay)

    # -- running --------------------------------------------------------------------------------
    def serve(self, host: str, port: int, ae_title: str) -> None:
        """Receive until stopped (Ctrl-C / SIGTERM arrive as KeyboardInterrupt)."""
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        self.outbox.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=ae_title)
        syntaxes = accepted_syntaxes()
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, syntaxes)
        ae.add_supported_context(Verification)  # C-ECHO: pynetdicom answers it with success
        ae.require_called_aet = False
        ae.acse_timeout, ae.maximum_associations = ACSE_TIMEOUT_S, MAX_ASSOCIATIONS
        sender = threading.Thread(target=self._sender, name="edgemed-sender", daemon=True)
        sender.start()
        server = ae.start_server((host, port), block=False, evt_handlers=[(evt.EVT_C_STORE, self.handle_store)])
        LOG.info("listening as %s on %s:%d (C-ECHO; C-STORE in %d transfer syntaxes); results to %s; outbox %s",
                 ae_title, host, port, len(syntaxes), self.destination or "(none)", self.outbox)
        try:
            while True:
                time.sleep(0.5)
        finally:
            self._stop.set()
            server.shutdown()
            sender.join(timeout=10)


def accepted_syntaxes() -> list[str]:
    """The uncompressed transfer syntaxes and every compressed one a decoder installed here reads: a scanner may
    send JPEG or JPEG 2000, and the node must accept what ``predict`` decodes (pydicom says which)."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import AllTransferSyntaxes
    from pynetdicom import DEFAULT_TRANSFER_SYNTAXES

    out = list(DEFAULT_TRANSFER_SYNTAXES)
    for syntax in AllTransferSyntaxes:
        if syntax in out or not syntax.is_compressed:
            continue
        try:
            if get_decoder(syntax).is_available:
                out.append(str(syntax))
        except NotImplementedError:  # no decoder exists for it in pydicom (video syntaxes)
            continue
    return out
def _valid_uid(uid: str) -> bool:
    """A DICOM UID (PS3.5 9.1): digits and dots, no empty or zero-led component, at most 64 characters."""
    import re

    return len(uid) <= 64 and re.fullmatch(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*", uid) is not None
