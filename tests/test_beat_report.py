"""A DICOM ECG waveform's beats as a Comprehensive SR that points into it: read the same as the WFDB record it
holds, every beat's R peak and class recoverable from the SR, valid to dciodvfy, the same UIDs when run again,
and the CLI writing it beside STEM.beats.json (issue 21: DICOM reporting for beat classifiers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgemed
from edgemed.io.signals import read_signal
from edgemed.samples import ecg_record

from .dicom_waveform import write_ecg_waveform

hd = pytest.importorskip("highdicom", reason="highdicom not installed (pip install 'edgemed[dicom]')")
pydicom = pytest.importorskip("pydicom")
pytest.importorskip("wfdb", reason="wfdb not installed (pip install 'edgemed[signal]')")


@pytest.fixture(scope="module")
def ecg_dicom(tmp_path_factory) -> Path:
    """MIT-BIH 213's first 10 minutes (MLII, V1 at 360 Hz) as a General ECG Waveform."""
    sig = read_signal(ecg_record())
    return write_ecg_waveform(sig.samples, sig.fs, sig.leads, tmp_path_factory.mktemp("ecg") / "mitdb213.dcm")


def _walk(items):
    for item in items:
        yield item
        if "ContentSequence" in item:
            yield from _walk(item.ContentSequence)


def _findings(sr) -> dict[str, tuple[int, list[int]]]:
    """class -> (the count the SR states, the R-peak sample positions its TCOORD lists)."""
    out = {}
    for item in _walk(sr.ContentSequence):
        if item.ValueType == "CODE" and item.ConceptNameCodeSequence[0].CodeMeaning == "Finding":
            label = item.ConceptCodeSequence[0].CodeMeaning
            count = next(int(float(c.MeasuredValueSequence[0].NumericValue)) for c in item.ContentSequence
                         if c.ValueType == "NUM")
            tcoord = next(c for c in item.ContentSequence if c.ValueType == "TCOORD")
            out[label] = (count, [int(p) for p in np.atleast_1d(tcoord.ReferencedSamplePositions)])
    return out


def test_beats_of_a_dicom_waveform_go_into_an_sr_that_points_into_it(rr_bundle, ecg_dicom, tmp_path):
    from edgemed.pacs.beat_report import write_beat_sr

    with edgemed.load(rr_bundle) as pipe:
        record = pipe.beats(ecg_dicom)
        wfdb = pipe.beats(ecg_record())
        sr_path = write_beat_sr(pipe, ecg_dicom, record, tmp_path / "r")
        again = write_beat_sr(pipe, ecg_dicom, pipe.beats(ecg_dicom), tmp_path / "a")
    # the DICOM holds the record's samples exactly (5 µV steps in µV counts): the same beats, the same answers
    assert [(b.sample, b.label) for b in record.beats] == [(b.sample, b.label) for b in wfdb.beats]
    assert len(record.beats) > 1000 and len(record.counts()) >= 3
    source, sr = pydicom.dcmread(ecg_dicom), pydicom.dcmread(sr_path)
    assert sr.SOPClassUID == pydicom.uid.ComprehensiveSRStorage and sr.Modality == "SR"
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == source.PatientID
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID
    evidence = [i.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                for r in s.ReferencedSeriesSequence for i in r.ReferencedSOPSequence]
    assert evidence == [source.SOPInstanceUID]
    found = _findings(sr)
    expected = {k: v for k, v in record.counts().items() if v}
    assert {k: c for k, (c, _) in found.items()} == expected  # every class found, with its count; none invented
    for label, (_, positions) in found.items():  # every beat's R peak, on the source's samples (DICOM counts from 1)
        assert positions == [b.sample + 1 for b in record.beats if b.label == label]
    waveforms = [i for i in _walk(sr.ContentSequence) if i.ValueType == "WAVEFORM"]
    assert len(waveforms) == len(found)  # one SELECTED FROM per TCOORD
    ref = waveforms[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert list(ref.ReferencedWaveformChannels) == [1, 1]  # group 1, channel 1: MLII, the lead the model reads
    algorithm = [i.TextValue for i in _walk(sr.ContentSequence) if i.ValueType == "TEXT"
                 and i.ConceptNameCodeSequence[0].CodeMeaning == "Algorithm Parameters"]
    assert "backend=onnxruntime" in algorithm or "backend=openvino" in algorithm, algorithm
    assert pydicom.dcmread(again).SOPInstanceUID == sr.SOPInstanceUID  # the same source and artifact: same UIDs
    from .test_dicom_results import _dciodvfy_errors

    assert not _dciodvfy_errors(sr_path)


def test_a_gap_is_reported_as_a_stretch_without_beats(rr_bundle, tmp_path):
    """Silence in the SR is not normal rhythm: a flat stretch is its own item, with its extent and reason."""
    from edgemed.pacs.beat_report import write_beat_sr

    sig = read_signal(ecg_record())
    samples = sig.samples[: int(120 * sig.fs)].copy()
    samples[int(40 * sig.fs): int(60 * sig.fs)] = 0.0  # leads off for 20 s
    path = write_ecg_waveform(samples, sig.fs, sig.leads, tmp_path / "gap.dcm")
    with edgemed.load(rr_bundle) as pipe:
        record = pipe.beats(path)
        sr = pydicom.dcmread(write_beat_sr(pipe, path, record, tmp_path / "g"))
    assert len(record.gaps) == 1
    (gap,) = [i for i in _walk(sr.ContentSequence) if i.ValueType == "TEXT"
              and i.ConceptNameCodeSequence[0].CodeMeaning == "No usable signal"]
    assert record.gaps[0].reason in gap.TextValue
    (extent,) = [i for i in gap.ContentSequence if i.ValueType == "TCOORD"]
    first, last = (int(p) for p in extent.ReferencedSamplePositions)
    assert extent.TemporalRangeType == "SEGMENT"
    assert abs(first - 40 * sig.fs) < 2 * sig.fs and abs(last - 60 * sig.fs) < 2 * sig.fs
    assert all(not (first <= b.sample + 1 <= last) for b in record.beats)


def test_predict_writes_the_sr_beside_the_beats_and_refuses_image_kinds(rr_bundle, ecg_dicom, tmp_path):
    run = [sys.executable, "-m", "edgemed.cli", "predict", str(rr_bundle), str(ecg_dicom), "--out", str(tmp_path)]
    proc = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    beats = json.loads((tmp_path / "mitdb213.beats.json").read_text())["beats"]
    found = _findings(pydicom.dcmread(tmp_path / "mitdb213.sr.dcm"))
    assert sum(c for c, _ in found.values()) == len(beats)
    proc = subprocess.run(run + ["--dicom", "sc"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "use --dicom sr" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
