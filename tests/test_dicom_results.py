"""DICOM SEG, SR and SC from real DICOM sources, read back with highdicom and checked against the runtime."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

import edgemed
from edgemed.errors import InputError
from edgemed.io.images import read_frames
from edgemed.pacs.results import write_objects

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


def test_detection_sr_holds_each_box_as_a_region_on_the_source(det_fp32, tmp_path):
    bundle = det_fp32
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


def _without_patient_id(tmp_path):
    ds = pydicom.dcmread(DICOM / "CT_small.dcm")
    del ds.PatientID, ds.StudyID  # anonymisers drop them; both are type 2 in every result object
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    return ds


def test_a_batch_goes_on_past_a_source_without_patient_id_and_a_seg(unet_bundle, tmp_path):
    """Issue 20.5 and 20.6: a source without PatientID gets its results (type-2 attributes present and empty); a SEG
    among the inputs is refused before inference, and every other file still gets its SEG/SR/SC."""
    folder = tmp_path / "in"
    folder.mkdir()
    _without_patient_id(tmp_path).save_as(folder / "a_anonymous.dcm")
    shutil.copy(DICOM / "liver_1frame.dcm", folder / "b_liver_seg.dcm")  # a Segmentation Storage object
    shutil.copy(DICOM / "MR_small.dcm", folder / "c_mr.dcm")
    out = tmp_path / "o"
    proc = subprocess.run([sys.executable, "-m", "edgemed.cli", "predict", str(unet_bundle), str(folder), "--out",
                           str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr  # before: exit 3 at a_anonymous, nothing for c_mr
    refused = [ln for ln in proc.stderr.splitlines() if "b_liver_seg.dcm" in ln]
    assert len(refused) == 1 and "Segmentation object is a result, not an image" in refused[0]
    assert "1 of 3 input file(s) not analysed" in proc.stderr and "internal error" not in proc.stderr
    assert "b_liver_seg" not in proc.stdout and not list(out.glob("b_liver_seg*"))  # never inferred on
    for stem in ("a_anonymous", "c_mr"):
        assert {p.name for p in out.glob(f"{stem}.*.dcm")} == {f"{stem}.{k}.dcm" for k in ("seg", "sr", "sc")}
    for p in out.glob("a_anonymous.*.dcm"):
        obj = pydicom.dcmread(p)
        assert "PatientID" in obj and obj.PatientID == "" and obj.StudyID == ""  # present, empty, never invented
        validator = shutil.which("dciodvfy")
        if validator:
            report = subprocess.run([validator, str(p)], capture_output=True, text=True, timeout=60)
            assert not [ln for ln in (report.stdout + report.stderr).splitlines() if ln.startswith("Error")], p.name


def test_result_objects_are_refused_wherever_frames_are_read(unet_bundle, tmp_path):
    """Issue 20.6: SEG, SR, KOS and presentation states, and edgemed's own overlay captures, are results."""
    from pydicom.dataset import FileMetaDataset

    with pytest.raises(InputError, match="Segmentation object is a result"):
        read_frames(DICOM / "liver_1frame.dcm")
    frames = read_frames(DICOM / "CT_small.dcm")
    with edgemed.load(unet_bundle) as pipe:
        written = write_objects(pipe, DICOM / "CT_small.dcm", frames, [pipe.predict(frames[0])], tmp_path / "r",
                                ("sc",))
    with pytest.raises(InputError, match="edgemed overlay capture object is a result"):
        read_frames(written[0])  # an SC with pixels, but a picture of an answer
    for sop in ("1.2.840.10008.5.1.4.1.1.88.59", "1.2.840.10008.5.1.4.1.1.11.1", "1.2.840.10008.5.1.4.1.1.88.22"):
        ds = pydicom.dcmread(DICOM / "CT_small.dcm")  # pixels kept: the SOP class alone decides
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop
        ds.file_meta = FileMetaDataset(ds.file_meta)
        ds.save_as(tmp_path / "r.dcm")
        with pytest.raises(InputError, match="is a result, not an image"):
            read_frames(tmp_path / "r.dcm")


def _dciodvfy_errors(path) -> list[str]:
    validator = shutil.which("dciodvfy")  # dicom3tools' IOD validator (.ci/run installs it); skipped where missing
    if not validator:
        return []
    report = subprocess.run([validator, str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (report.stdout + report.stderr).splitlines() if ln.startswith("Error")]


def test_an_explanation_is_stored_as_a_capture_labelled_explanation_not_a_finding(cnn_cam_bundle, tmp_path):
    """Issue 22: a bundle converted with --explain adds its saliency picture as a secondary capture (the PNG predict
    --out writes, pixel for pixel), in the source's study, its own series, referencing the source frame, and
    labelled an explanation wherever a viewer shows an image's text; never a SEG or an SR finding."""
    from edgemed.io.saliency_overlay import saliency_picture
    from edgemed.pacs.results import KINDS

    path = DICOM / "examples_rgb_color.dcm"  # 8-bit RGB ultrasound, what the classifier reads
    frames = read_frames(path)
    with edgemed.load(cnn_cam_bundle) as pipe:
        results = [pipe.predict(f) for f in frames]
        written = write_objects(pipe, path, frames, results, tmp_path / "e", KINDS)
    assert [p.name for p in written] == ["e.sr.dcm", "e.sc.dcm", "e.saliency.dcm"]
    source = pydicom.dcmread(path)
    sc, exp = pydicom.dcmread(written[1]), pydicom.dcmread(written[2])
    np.testing.assert_array_equal(exp.pixel_array, np.asarray(saliency_picture(frames[0], results[0].saliency)))
    assert results[0].saliency.max() > 0  # a picture with a map on it, not the bare frame
    assert exp.SOPClassUID == sc.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert exp.StudyInstanceUID == source.StudyInstanceUID and exp.PatientID == source.PatientID
    assert len({exp.SeriesInstanceUID, sc.SeriesInstanceUID, source.SeriesInstanceUID}) == 3
    assert exp.SOPInstanceUID not in (sc.SOPInstanceUID, source.SOPInstanceUID) and exp.SeriesNumber == 9104
    (ref,) = exp.SourceImageSequence
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (source.SOPClassUID, source.SOPInstanceUID)
    for text in (exp.SeriesDescription, exp.DerivationDescription, exp.ImageComments):
        assert text.startswith("EXPLANATION (saliency), not a finding")
    assert "CAM" in exp.ImageComments and repr(results[0].label) in exp.ImageComments
    assert list(exp.ImageType)[:2] == ["DERIVED", "SECONDARY"] and exp.Manufacturer == "edgemed"
    with edgemed.load(cnn_cam_bundle) as pipe:  # the same source and artifact again: the same UIDs
        again = write_objects(pipe, path, frames, [pipe.predict(f) for f in frames], tmp_path / "a", ("saliency",))
    assert pydicom.dcmread(again[0]).SOPInstanceUID == exp.SOPInstanceUID
    with pytest.raises(InputError, match="is a result"):  # never analysed again as an image
        read_frames(written[2])
    assert not _dciodvfy_errors(written[2])


def test_a_bundle_without_explanation_writes_no_explanation(cnn_bundle, tmp_path):
    from edgemed.pacs.results import KINDS

    path = DICOM / "examples_rgb_color.dcm"
    frames = read_frames(path)
    with edgemed.load(cnn_bundle) as pipe:
        results = [pipe.predict(f) for f in frames]
        written = write_objects(pipe, path, frames, results, tmp_path / "n", KINDS, strict=False)
        assert [p.name for p in written] == ["n.sr.dcm", "n.sc.dcm"]
        with pytest.raises(InputError, match="makes no explanation"):
            write_objects(pipe, path, frames, results, tmp_path / "m", ("saliency",))
    cli = [sys.executable, "-m", "edgemed.cli", "predict", str(cnn_bundle), str(path), "--out", str(tmp_path / "o"),
           "--dicom", "sr,saliency"]
    proc = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "makes no explanation" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_predict_writes_the_explanation_capture_by_default(cnn_cam_bundle, tmp_path):
    out = tmp_path / "o"
    cli = [sys.executable, "-m", "edgemed.cli", "predict", str(cnn_cam_bundle), str(DICOM / "examples_rgb_color.dcm")]
    proc = subprocess.run(cli + ["--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    names = {p.name for p in out.glob("*.dcm")}
    assert names == {f"examples_rgb_color.{k}.dcm" for k in ("sr", "sc", "saliency")}, names
    png = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out / "examples_rgb_color_saliency.png"))
    np.testing.assert_array_equal(pydicom.dcmread(out / "examples_rgb_color.saliency.dcm").pixel_array, png)


def test_a_node_asked_for_explanations_does_not_wait_for_one_a_bundle_cannot_make(cnn_bundle, tmp_path):
    """listen --dicom sr,sc,saliency with a bundle converted without --explain: once its SR and SC were delivered,
    a source sent again counts as answered (before, it waited for a saliency capture that never comes and
    analysed and sent the source again every time)."""
    from edgemed.pacs.node import Node
    from edgemed.pacs.results import Algorithm, result_uid

    source = pydicom.dcmread(DICOM / "examples_rgb_color.dcm")
    with edgemed.load(cnn_bundle) as pipe:
        node = Node({"*": pipe}, None, tmp_path / "outbox", kinds=("sr", "sc", "saliency"))
        assert not node._already_sent(pipe, source)
        for kind in ("sr", "sc"):
            node._record_delivery(result_uid(source, Algorithm.of(pipe), kind))
        assert node._already_sent(pipe, source)
