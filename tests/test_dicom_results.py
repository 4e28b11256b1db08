"""DICOM SEG, SR and SC from real DICOM sources, read back with highdicom and checked against the runtime."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

import edgemed
from edgemed.dicom_results import write_objects
from edgemed.errors import InputError
from edgemed.images import read_frames

from .conftest import DICOM

hd = pytest.importorskip("highdicom", reason="highdicom not installed (pip install 'edgemed[dicom]')")
pydicom = pytest.importorskip("pydicom")

SOURCES = ["CT_small.dcm", "MR_small.dcm", "examples_palette.dcm", "examples_rgb_color.dcm"]


def _walk(items):
    for item in items:
        yield item
        if "ContentSequence" in item:
            yield from _walk(item.ContentSequence)


def _sr_items(ds) -> list:
    return list(_walk(ds.ContentSequence))


@pytest.mark.parametrize("name", SOURCES)
def test_seg_reads_back_equal_to_the_runtime_mask(unet_bundle, name, tmp_path):
    path = DICOM / name
    frames = read_frames(path)
    with edgemed.load(unet_bundle) as pipe:
        results = [pipe.predict(f) for f in frames]
        written = write_objects(pipe, path, frames, results, tmp_path / "r", ("seg", "sr", "sc"))
    source = pydicom.dcmread(path)
    seg_path, sr_path, sc_path = written
    seg = hd.seg.segread(seg_path)
    labels = seg.get_pixels_by_source_instance(source_sop_instance_uids=[source.SOPInstanceUID],
                                               combine_segments=True)
    np.testing.assert_array_equal(labels[0], results[0].mask)  # pixel for pixel
    for obj in (seg, pydicom.dcmread(sr_path), pydicom.dcmread(sc_path)):
        assert obj.StudyInstanceUID == source.StudyInstanceUID and obj.PatientID == source.PatientID
        assert obj.SeriesInstanceUID != source.SeriesInstanceUID and obj.SOPInstanceUID != source.SOPInstanceUID
    desc = seg.SegmentSequence[0]
    algo = desc.SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "unet_busi" and desc.SegmentLabel == "lesion"
    sr = pydicom.dcmread(sr_path)
    evidence = [i.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                for r in s.ReferencedSeriesSequence for i in r.ReferencedSOPSequence]
    assert source.SOPInstanceUID in evidence
    areas = [i for i in _sr_items(sr) if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeMeaning == "Area"]
    assert len(areas) == len(frames)
    unit = areas[0].MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeMeaning
    lesion_px = int((results[0].mask == 1).sum())
    value = float(areas[0].MeasuredValueSequence[0].NumericValue)
    regions = source.get("SequenceOfUltrasoundRegions")
    if "PixelSpacing" in source:  # mm² where the source states its spacing, pixels where it does not
        sy, sx = (float(v) for v in source.PixelSpacing)
        assert unit == "square millimeter" and value == pytest.approx(lesion_px * sy * sx, rel=1e-6)
    elif regions and regions[0].PhysicalUnitsXDirection == 3:  # ultrasound regions in cm
        r = regions[0]
        assert unit == "square millimeter"
        assert value == pytest.approx(lesion_px * float(r.PhysicalDeltaX) * float(r.PhysicalDeltaY) * 100, rel=1e-6)
    else:
        assert unit == "pixels" and value == lesion_px
    sc = pydicom.dcmread(sc_path)
    assert sc.pixel_array.shape[:2] == results[0].mask.shape and sc.PhotometricInterpretation == "RGB"
    validator = shutil.which("dciodvfy")  # dicom3tools' IOD validator (.ci/run installs it)
    if validator:
        for p in written:
            report = subprocess.run([validator, str(p)], capture_output=True, text=True, timeout=60)
            errors = [ln for ln in (report.stdout + report.stderr).splitlines() if ln.startswith("Error")]
            assert not errors, (p.name, errors)


def test_classification_sr_carries_the_finding_and_probabilities(cnn_bundle, tmp_path):
    path = DICOM / "examples_rgb_color.dcm"  # 8-bit ultrasound: what the classifier reads (MR is out of its range)
    frames = read_frames(path)
    with edgemed.load(cnn_bundle) as pipe:
        results = [pipe.predict(f) for f in frames]
        (sr_path,) = write_objects(pipe, path, frames, results, tmp_path / "c", ("sr",))
    items = _sr_items(pydicom.dcmread(sr_path))
    finding = [i for i in items if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeMeaning == "Finding"]
    assert finding[0].ConceptCodeSequence[0].CodeMeaning == results[0].label
    probs = {i.ConceptNameCodeSequence[0].CodeMeaning: float(i.MeasuredValueSequence[0].NumericValue)
             for i in items if i.ValueType == "NUM"}
    for name, p in zip(pipe.labels, results[0].probabilities):
        assert probs[f"Probability of {name}"] == pytest.approx(float(p), abs=1e-6)


def test_cli_writes_dicom_results_for_dicom_inputs(unet_bundle, tmp_path):
    out = tmp_path / "o"
    cli = [sys.executable, "-m", "edgemed.cli", "predict", str(unet_bundle), str(DICOM / "CT_small.dcm")]
    proc = subprocess.run(cli + ["--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.glob("*.dcm")} == {"CT_small.seg.dcm", "CT_small.sr.dcm", "CT_small.sc.dcm"}
    assert not list(out.glob(".*tmp"))  # nothing half-written
    proc = subprocess.run(cli + ["--dicom", "seg,pdf", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "unknown kind(s) pdf" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_results_and_sources_without_pixels_are_refused(unet_bundle, tmp_path):
    frames = [np.zeros((64, 64), np.uint8)]
    with edgemed.load(unet_bundle) as pipe:
        results = [pipe.predict(frames[0])]
        with pytest.raises(InputError, match="is a result, not an image"):
            write_objects(pipe, DICOM / "liver_1frame.dcm", frames, results, tmp_path / "x", ("seg",))
        ds = pydicom.dcmread(DICOM / "CT_small.dcm")
        del ds.PixelData
        ds.save_as(tmp_path / "nopixels.dcm")
        with pytest.raises(InputError, match="no pixel data"):
            write_objects(pipe, tmp_path / "nopixels.dcm", frames, results, tmp_path / "y", ("sr",))
    assert not list(tmp_path.glob("x*")) and not list(tmp_path.glob("y*"))


def test_detection_sr_holds_each_box_as_a_region_on_the_source(tmp_path_factory, tmp_path):
    from edgemed.samples import calibration_set

    from .conftest import convert_shipped

    bundle = convert_shipped("det_busi", tmp_path_factory.mktemp("det") / "det", calib=calibration_set("detection"))
    path = DICOM / "examples_palette.dcm"
    frames = read_frames(path)
    with edgemed.load(bundle) as pipe:
        results = [pipe.predict(f) for f in frames]
        written = write_objects(pipe, path, frames, results, tmp_path / "d", ("seg", "sr", "sc"))
    assert [p.name for p in written] == ["d.sr.dcm", "d.sc.dcm"]  # no SEG from a detector
    regions = [i for i in _sr_items(pydicom.dcmread(written[0])) if i.ValueType == "SCOORD"]
    assert len(regions) == len(results[0].boxes) >= 1
    for item, box in zip(regions, results[0].boxes):
        x1, y1, x2, y2 = (float(v) for v in box)
        corners = np.array(item.GraphicData, float).reshape(-1, 2)
        np.testing.assert_allclose(corners, [[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]], atol=1e-3)
        assert item.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
            pydicom.dcmread(path).SOPInstanceUID
