"""A recording's beats as a DICOM Comprehensive SR that points into the ECG waveform it came from.

The image results (SEG, TID 1500 SR) answer for pixels; a beat classifier answers for instants of a waveform, so
its report is built from the SR value types made for that (PS3.3 C.18.7, TCOORD): for each class the model found,
a finding (the class, in the private scheme the image reports use for the model's own names), how many beats, and
one multi-point TCOORD with the sample position of every such beat's R peak, SELECTED FROM the waveform's channels
that were read. A stretch with no usable signal is a TCOORD segment with its reason: a gap is an answer too, and a
reader must not take silence there for normal rhythm. The per-beat probabilities stay in ``STEM.beats.json``: the
SR is what a PACS viewer shows, the JSON what software reads.

highdicom (the library the image results use) builds and validates the content items and the document; the
template is edgemed's own (highdicom carries none for ECG), so the document title is the LOINC ECG report code and
the algorithm is named with TID 4019 (Algorithm Identification), as in the image reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError
from .results import LOCAL_SCHEME, MANUFACTURER, Algorithm, open_source, result_uid, save_whole

SERIES_NUMBER = 9105  # beside the image results' 9101-9104


def read_waveform_source(path: Path):
    """The source waveform instance, refused with one line where it holds no waveform to point into."""
    ds = open_source(path, "pass a DICOM ECG waveform")
    if "WaveformSequence" not in ds:
        raise InputError(f"{path}: the DICOM object holds no waveform", "pass an ECG waveform object")
    return ds


def _tcoord(name, kind: str, positions: list[int]):
    import highdicom as hd

    return hd.sr.TcoordContentItem(name=name, temporal_range_type=kind, referenced_sample_positions=positions,
                                   relationship_type="INFERRED FROM")


def _select_from_waveform(items, source, channels: list[int]) -> None:
    """Give every TCOORD its SELECTED FROM WAVEFORM child (PS3.3 C.18.7: the samples a TCOORD counts are those of
    a waveform). Added to the finished document because highdicom 0.28 builds WAVEFORM items but cannot read one
    back, which its document constructor does with every item (KeyError 'WAVEFORM'); dciodvfy checks the result."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    for item in items:
        if item.ValueType == "TCOORD":
            item.ContentSequence = [hd.sr.WaveformContentItem(
                name=codes.DCM.SourceOfMeasurement, referenced_sop_class_uid=source.SOPClassUID,
                referenced_sop_instance_uid=source.SOPInstanceUID,
                referenced_waveform_channels=[(1, c) for c in channels], relationship_type="SELECTED FROM")]
        elif "ContentSequence" in item:
            _select_from_waveform(item.ContentSequence, source, channels)


def beat_findings(record: Any, labels: list[str], fs: float) -> list:
    """The report's findings: per class found, the class, its count and its beats' R peaks; then each gap."""
    import highdicom as hd
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    items = []
    for index, label in enumerate(labels):
        peaks = [b.sample + 1 for b in record.beats if b.label == label]  # DICOM sample positions count from 1
        if not peaks:
            continue
        finding = hd.sr.CodeContentItem(name=codes.DCM.Finding, value=CodedConcept(str(index), LOCAL_SCHEME, label),
                                        relationship_type="CONTAINS")
        count = hd.sr.NumContentItem(name=CodedConcept("beats", LOCAL_SCHEME, "Beats of this class"),
                                     value=len(peaks), unit=CodedConcept("{beats}", "UCUM", "beats"),
                                     relationship_type="HAS PROPERTIES")
        finding.ContentSequence = [count, _tcoord(codes.DCM.RWave, "MULTIPOINT", peaks)]
        items.append(finding)
    for gap in record.gaps:
        first = int(round(gap.start_s * fs)) + 1
        last = max(first, int(round(gap.end_s * fs)))
        text = hd.sr.TextContentItem(name=CodedConcept("gap", LOCAL_SCHEME, "No usable signal"),
                                     value=f"{gap.start_s:.2f}-{gap.end_s:.2f} s: {gap.reason}"[:1024],
                                     relationship_type="CONTAINS")
        text.ContentSequence = [_tcoord(CodedConcept("gap-extent", LOCAL_SCHEME, "Stretch without beats"),
                                        "SEGMENT", [first, last])]
        items.append(text)
    return items


def write_beat_sr(pipe: Any, path: Path, record: Any, out: Path) -> Path:
    """The beats ``pipe.beats(path)`` found in one DICOM ECG waveform, as a Comprehensive SR in the source's
    study, written as ``OUT.sr.dcm``."""
    import highdicom as hd
    import numpy as np
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    from ..io.signals import Signal, dicom_lead_names
    from .results import check_source

    source = read_waveform_source(path)
    check_source(source, path)
    group = source.WaveformSequence[0]  # the group read_signal reads: its rate, and the leads the spec picks from it
    fs, leads = float(group.SamplingFrequency), dicom_lead_names(group)
    channels = [i + 1 for i in pipe.preprocessor.read_leads(Signal(np.ones((2, len(leads))), fs, leads, str(path)))]
    algo = Algorithm.of(pipe)
    findings = hd.sr.ContainerContentItem(name=codes.DCM.Findings, relationship_type="CONTAINS")
    algorithm = hd.sr.AlgorithmIdentification(name=algo.name[:64], version=algo.bundle_sha256[:16], parameters=[
        f"artifact={algo.artifact}", f"backend={algo.backend}", f"precision={algo.precision}",
        f"verdict={algo.verdict}"])
    findings.ContentSequence = [*algorithm, *beat_findings(record, list(pipe.labels), fs)]
    root = hd.sr.ContainerContentItem(name=codes.LN.ECGReport)
    root.ContentSequence = [*algo.observation_context(), findings]
    procedure = CodedConcept("edgemed-ai", LOCAL_SCHEME, "AI analysis")
    out.parent.mkdir(parents=True, exist_ok=True)
    sr = hd.sr.ComprehensiveSR(
        evidence=[source], content=root, series_instance_uid=result_uid(source, algo, "sr", "series"),
        series_number=SERIES_NUMBER, sop_instance_uid=result_uid(source, algo, "sr"), instance_number=1,
        manufacturer=MANUFACTURER, performed_procedure_codes=[procedure],
        series_description=f"edgemed {algo.name} beats ({algo.backend}/{algo.precision}, {algo.verdict})"[:64])
    _select_from_waveform(sr.ContentSequence, source, channels)
    return save_whole(sr, out.with_name(out.name + ".sr.dcm"))
