"""Results as DICOM objects a PACS understands: SEG, a TID 1500 measurement report (SR), a secondary capture.

Built with highdicom (a well-kept library that validates as it builds), from the source instance
``predict`` read, so every object carries the source's patient, study and frame-of-reference context
with new series and instance UIDs, and nothing the source did not have is invented. Each names the
algorithm: the bundle's name and hash, the artifact, its backend and precision and its verdict.

- SEG: one segment per non-background class (SNOMED "Lesion" under "Morphologically abnormal
  structure" unless the class is the background), a label map per source frame, so a multi-frame
  input gives a multi-frame SEG; empty frames are kept (a frame without a lesion is an answer).
- SR (Comprehensive 3D SR, TID 1500): classification findings with their probabilities; detections as
  image regions (closed polylines on the source frame); lesion areas from masks, in mm² where the
  source states its pixel spacing and in pixels otherwise (the text says which).
- SC: the frame with the overlay drawn, for viewers that read neither.
- Saliency SC (bundles converted with ``--explain``): the explanation's heat map over the frame, labelled as an
  explanation, not a finding, in its own series.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..tasks import task_named
from ..tasks.base import ReportFrame

MANUFACTURER = "edgemed"
LOCAL_SCHEME = "99EDGEMED"  # private coding scheme for the model's own class names


@dataclass(frozen=True)
class Algorithm:
    """Who made the result: what every object states."""

    name: str
    bundle_sha256: str
    artifact: str
    backend: str
    precision: str
    verdict: str
    version: str

    @classmethod
    def of(cls, pipe: Any) -> Algorithm:
        from .. import __version__

        a = pipe.artifact
        return cls(pipe.bundle.name, pipe.bundle.manifest_sha256(), a.file, a.backend, a.precision, a.verdict,
                   __version__)

    def device_uid(self) -> str:
        """The SR's observer device: one UID per bundle and artifact, the same in every report it writes."""
        from pydicom.uid import generate_uid

        return generate_uid(entropy_srcs=[self.bundle_sha256, self.artifact, self.backend, self.precision, "device"])

    def observation_context(self):
        """Who observed, as every SR edgemed writes states it: this device (bundle and artifact), edgemed made it."""
        import highdicom as hd
        from pydicom.sr.codedict import codes

        return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=self.device_uid(), name=self.name[:64], manufacturer_name=MANUFACTURER,
                model_name=self.artifact[:64])))

    def identification(self):
        import highdicom as hd
        from pydicom.sr.codedict import codes

        return hd.AlgorithmIdentificationSequence(
            name=self.name[:64], family=codes.DCM.ArtificialIntelligence, version=self.bundle_sha256[:16],
            source="edgemed", parameters={"artifact": self.artifact, "backend": self.backend,
                                          "precision": self.precision, "verdict": self.verdict})


def read_source(path: Path):
    """The source instance; refused with one line if it holds no image edgemed can answer for."""
    ds = open_source(path, "pass a DICOM image")
    if "PixelData" not in ds:
        raise InputError(f"{path}: the DICOM object has no pixel data", "send an image, not a report or a waveform")
    return ds


def open_source(path: Path, fix: str):
    """A source instance as every result copies it: refused with one line (``fix``) if it does not read, its
    type-2 study context present (empty where absent) and dates it cannot use emptied."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: not a readable DICOM file ({str(exc)[:120]})", fix) from exc
    for keyword in TYPE2_CONTEXT:  # what every result copies from its source: absent there, present and empty here
        if keyword not in ds:
            setattr(ds, keyword, None)
    _empty_unreadable_dates(ds)
    return ds


def _empty_unreadable_dates(ds) -> None:
    """A study date or time the standard's format does not allow ("14:04:38" for TM, found by the fuzz suite) is
    copied into the results empty, as a type-2 attribute may be: highdicom stopped with pydicom's ValueError, and
    the study is still named by its Study Instance UID."""
    from pydicom.valuerep import DA, TM

    for keyword, vr in (("StudyDate", DA), ("StudyTime", TM), ("PatientBirthDate", DA)):
        value = ds.get(keyword)
        if value in (None, ""):
            continue
        try:
            vr(value if isinstance(value, str) else str(value))
        except (ValueError, TypeError):
            setattr(ds, keyword, None)


# Type-2 attributes of the Patient and General Study modules, which every result object copies from its source.
# A source without one (anonymisers drop PatientID; some modalities never write StudyID) gets it empty, as the
# standard allows for type 2; highdicom would otherwise stop with an AttributeError.
TYPE2_CONTEXT = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber",
                 "ReferringPhysicianName", "StudyDate", "StudyTime")


def save_whole(dataset, path: Path) -> Path:
    """Written whole or not at all: a temporary file in the same folder, then an atomic rename."""
    import os

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        dataset.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _copy_or_empty(obj, source, keyword: str) -> None:
    """A type 2(C) attribute: the source's value where it has one, else present and empty; never invented."""
    if keyword not in obj:
        setattr(obj, keyword, getattr(source, keyword, None) or None)


def result_uid(source, algo: Algorithm, kind: str, role: str = "instance") -> str:
    """The UID of one part of one result: the same source instance analysed by the same artifact gives the same
    UIDs, so sending it again stores nothing new in a PACS (a UID names one object: same source, same artifact,
    same answer). pydicom derives it from these parts by hashing (``generate_uid(entropy_srcs=...)``)."""
    from pydicom.uid import generate_uid

    parts = [str(source.SOPInstanceUID), algo.bundle_sha256, algo.artifact, algo.backend, algo.precision, kind, role]
    return generate_uid(entropy_srcs=parts)


def write_seg(source, masks: list[np.ndarray], labels: list[str], algo: Algorithm, out: Path) -> Path:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    classes = list(range(1, len(labels)))
    if not classes:
        raise InputError("a segmentation with only a background class has nothing to store", "check the labels")
    descriptions = [hd.seg.SegmentDescription(
        segment_number=i, segment_label=labels[c][:64],
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algo.identification()) for i, c in enumerate(classes, start=1)]
    label_map = np.stack(masks).astype(np.uint8)
    series, instance = result_uid(source, algo, "seg", "series"), result_uid(source, algo, "seg")
    seg = hd.seg.Segmentation(
        source_images=[source], pixel_array=label_map, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=series, series_number=9101,
        sop_instance_uid=instance, instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=algo.name[:64], software_versions=algo.version,
        device_serial_number=algo.bundle_sha256[:16],
        series_description=f"edgemed {algo.name} segmentation ({algo.backend}/{algo.precision}, {algo.verdict})"[:64],
        omit_empty_frames=False)
    if "FrameOfReferenceUID" not in source:  # no patient coordinates: General Image's orientation is type 2C
        _copy_or_empty(seg, source, "PatientOrientation")
    return save_whole(seg, out.with_name(out.name + ".seg.dcm"))


def _capture(source, rgb: np.ndarray, algo: Algorithm, kind: str, series_number: int, description: str):
    """A secondary capture of an 8-bit RGB picture in the source's study, in its own series (UIDs from ``kind``)."""
    import highdicom as hd

    series, instance = result_uid(source, algo, kind, "series"), result_uid(source, algo, kind)
    spacing = getattr(source, "PixelSpacing", None)
    orientation = _orientation(source)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=np.ascontiguousarray(rgb, dtype=np.uint8),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB, bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT, patient_orientation=orientation or ("L", "P"),
        series_instance_uid=series, series_number=series_number, sop_instance_uid=instance, instance_number=1,
        manufacturer=MANUFACTURER, pixel_spacing=tuple(float(v) for v in spacing) if spacing else None,
        series_description=description[:64])
    if orientation is None:
        sc.PatientOrientation = None  # unknown in the source: empty (type 2), never a guess (highdicom wants one)
    _copy_or_empty(sc, source, "Laterality")  # type 2C (paired body parts): the source's, or empty (dciodvfy)
    return sc


def write_sc(source, overlay_rgb: np.ndarray, algo: Algorithm, out: Path) -> Path:
    sc = _capture(source, overlay_rgb, algo, "sc", 9103, f"edgemed {algo.name} overlay ({algo.verdict})")
    return save_whole(sc, out.with_name(out.name + ".sc.dcm"))


EXPLANATION = "EXPLANATION (saliency), not a finding"


def write_saliency_sc(source, picture_rgb: np.ndarray, method: str, target: str, algo: Algorithm, out: Path) -> Path:
    """The saliency picture (``predict --out``'s ``STEM_saliency.png``: the map over the first frame) as a secondary
    capture: never a diagnostic object (no SEG, no SR finding), because a map shows what the model weighted, not
    where a lesion is. A reader meets the word "explanation" wherever a PACS or viewer shows an image's text: the
    series description, the derivation description and the image comments; the Source Image Sequence names the
    frame it was made from. Its own series (9104) beside the overlay capture's, UIDs derived like every result's."""
    from pydicom.dataset import Dataset

    sc = _capture(source, picture_rgb, algo, "saliency", 9104, f"{EXPLANATION}: edgemed {algo.name}")
    statement = (f"{EXPLANATION}. {method} saliency map of {target} from edgemed {algo.name} ({algo.artifact}, "
                 f"{algo.backend}/{algo.precision}, {algo.verdict}), laid over the source frame: it shows which image "
                 "regions the model weighted, for quality assurance; it does not locate a lesion.")
    sc.DerivationDescription = statement[:1024]  # ST
    sc.ImageComments = statement  # LT
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
    if int(getattr(source, "NumberOfFrames", 1) or 1) > 1:
        ref.ReferencedFrameNumber = 1  # the first frame, as for the overlay capture
    sc.SourceImageSequence = [ref]
    # The source frame's pixels are in the picture: whatever identifying text the scanner burned into them is too.
    # The caption edgemed draws identifies nobody, so it changes nothing here; a source that does not say is unknown.
    if "BurnedInAnnotation" in source:
        sc.BurnedInAnnotation = source.BurnedInAnnotation
    return save_whole(sc, out.with_name(out.name + ".saliency.dcm"))


def _orientation(source) -> tuple[str, str] | None:
    """The rows' and columns' patient directions, from the source's own orientation attributes; None if it has none."""
    if "PatientOrientation" in source and len(source.PatientOrientation) == 2:
        return tuple(str(v) for v in source.PatientOrientation)
    iop = getattr(source, "ImageOrientationPatient", None)
    if iop is None and "SharedFunctionalGroupsSequence" in source:
        shared = source.SharedFunctionalGroupsSequence[0]
        if "PlaneOrientationSequence" in shared:
            iop = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    if iop is None or len(iop) != 6:
        return None

    def letter(v) -> str:
        axis = int(np.argmax(np.abs(v)))
        return ("L", "P", "H")[axis] if v[axis] > 0 else ("R", "A", "F")[axis]

    return letter(np.array(iop[:3], float)), letter(np.array(iop[3:], float))


def pixel_area(source) -> tuple[float, str]:
    """mm² per pixel where the source states its spacing; else 1 pixel (and the unit says so)."""
    spacing = getattr(source, "PixelSpacing", None)
    if spacing is None and "SequenceOfUltrasoundRegions" in source:
        region = source.SequenceOfUltrasoundRegions[0]
        units = (getattr(region, "PhysicalUnitsXDirection", None), getattr(region, "PhysicalUnitsYDirection", None))
        if units == (3, 3):  # 3: centimetres
            spacing = (float(region.PhysicalDeltaY) * 10, float(region.PhysicalDeltaX) * 10)  # cm -> mm
    if spacing is None:
        return 1.0, "pixels"
    return float(spacing[0]) * float(spacing[1]), "mm2"


def write_sr(source, results: list, task: str, labels: list[str], algo: Algorithm, out: Path) -> Path:
    import highdicom as hd
    from highdicom.sr import CodedConcept

    context = algo.observation_context()
    frame_area, unit = pixel_area(source)
    groups = []
    for number, result in enumerate(results, start=1):
        frame = ReportFrame(source, number, lambda role: result_uid(source, algo, "sr", role), LOCAL_SCHEME,
                            frame_area, unit)
        groups += task_named(task).sr_groups(frame, result, labels)
    report = hd.sr.MeasurementReport(observation_context=context, imaging_measurements=groups,
                                     procedure_reported=CodedConcept("edgemed-ai", LOCAL_SCHEME, "AI analysis"))
    series, instance = result_uid(source, algo, "sr", "series"), result_uid(source, algo, "sr")
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source], content=report, series_instance_uid=series, series_number=9102,
        sop_instance_uid=instance, instance_number=1, manufacturer=MANUFACTURER,
        series_description=f"edgemed {algo.name} report ({algo.backend}/{algo.precision}, {algo.verdict})"[:64])
    return save_whole(sr, out.with_name(out.name + ".sr.dcm"))


KINDS = ("seg", "sr", "sc", "saliency")  # saliency: bundles converted with --explain


def kinds_made(pipe: Any, kinds: tuple[str, ...]) -> tuple[str, ...]:
    """Of ``kinds``, those this pipeline's results can fill: a SEG needs masks, a saliency capture an explainer,
    and a model that reads recordings answers with beats, which only an SR carries (:mod:`.beat_report`)."""
    from ..input_kinds import input_kind

    if input_kind(pipe.input_kind).recordings:
        return tuple(k for k in kinds if k == "sr")
    return tuple(k for k in kinds if (k != "seg" or task_named(pipe.task).spatial)
                 and (k != "saliency" or getattr(pipe, "explainer", None) is not None))


def check_source(source, path: Path) -> None:
    from ..io.dicom import check_not_result

    check_not_result(source, path)


def write_objects(pipe: Any, path: Path, images: list[np.ndarray], results: list, out: Path,
                  kinds: tuple[str, ...], strict: bool = True, note=lambda s: None) -> list[Path]:
    """The DICOM objects for one source file's frames, written next to ``out`` (a path stem). ``strict``:
    a kind asked for by name that cannot be made is an error; otherwise (the defaults) it is skipped and
    ``note`` says why."""
    source = read_source(path)
    check_source(source, path)
    algo = Algorithm.of(pipe)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    if "seg" in kinds and task_named(pipe.task).spatial:  # a SEG holds maps
        if len(results) > 1 and "FrameOfReferenceUID" not in source:
            problem = (f"{path}: a multi-frame source without a frame of reference cannot be referenced frame by "
                       "frame from one SEG (highdicom refuses it)")
            if strict:
                raise InputError(problem, "pass --dicom sr,sc for this source")
            note(f"{problem}; SEG not written")
        else:
            written.append(write_seg(source, [r.mask for r in results], pipe.labels, algo, out))
    if "sr" in kinds:
        written.append(write_sr(source, results, pipe.task, pipe.labels, algo, out))
    if "sc" in kinds:  # the first frame: a viewer's key image, not a second copy of a cine loop
        frame = task_named(pipe.task).render(images[0], results[0], pipe.labels)
        written.append(write_sc(source, frame, algo, out))
    if "saliency" in kinds:
        saliency = getattr(results[0], "saliency", None)
        if saliency is not None:
            written.append(write_saliency_sc(source, _saliency_rgb(images[0], saliency), _method(pipe),
                                             f"{results[0].label!r}", algo, out))
        elif strict:
            raise InputError(f"{path}: {pipe.bundle.name} makes no explanation to store",
                             "convert it with --explain cam, or leave saliency out of --dicom")
    return written


def _saliency_rgb(image: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    from ..io.saliency_overlay import saliency_picture

    return np.asarray(saliency_picture(image, saliency).convert("RGB"))


def _method(pipe: Any) -> str:
    return str(pipe.bundle.manifest.explain.method).upper()
