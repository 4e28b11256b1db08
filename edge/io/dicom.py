"""DICOM decoding into the pixel values a model should see.

pydicom does the parsing and decompression; this module applies what the standard says a
viewer must apply before display-independent processing: Modality LUT (rescale slope and
intercept), MONOCHROME1 inversion, and colour conversion to RGB. Imported lazily: pydicom is
an optional extra.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError, first_line

# Result objects: analysing one as an image answers about a segmentation's label pixels or a report's
# rendering, not about the patient. Refused by SOP class (prefix: every SR and every presentation state).
RESULT_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation", "1.2.840.10008.5.1.4.1.1.66.5": "Surface Segmentation",
    "1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation", "1.2.840.10008.5.1.4.1.1.30": "Parametric Map",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set", "1.2.840.10008.5.1.4.1.1.88.": "Structured Report (SR/KOS)",
    "1.2.840.10008.5.1.4.1.1.11.": "Presentation State"}
# Modalities of objects that are not images to measure on (found by the fuzz suite: an SR-modality object under an
# image SOP class reached highdicom, which refused it as a source with a ValueError)
RESULT_MODALITIES = ("SEG", "SR", "DOC", "KO", "PR", "PLAN", "RWV", "REG", "FID", "RTDOSE", "RTPLAN", "RTRECORD",
                     "RTSTRUCT")


def result_kind(ds) -> str | None:
    """What kind of result object ``ds`` is (a SEG, an SR, a KOS, a presentation state, or an object edgemed wrote),
    or None for an object that may hold an image to analyse."""
    sop = str(ds.get("SOPClassUID", ""))
    for prefix, kind in RESULT_CLASSES.items():
        if sop == prefix or (prefix.endswith(".") and sop.startswith(prefix)):
            return kind
    modality = str(ds.get("Modality", "")).strip()
    if modality in RESULT_MODALITIES:  # a result under another SOP class (highdicom refuses it as a source)
        return f"modality {modality}"
    if str(ds.get("Manufacturer", "")).strip() == "edgemed":  # our own overlay capture: a picture of a result
        return "edgemed overlay capture"
    return None


def check_not_result(ds, path: str | Path) -> None:
    try:
        kind = result_kind(ds)
    except Exception as exc:  # noqa: BLE001 - elements are parsed lazily: a damaged SOP class, modality or
        # manufacturer fails here, in pydicom's types (the fuzz suite found NotImplementedError for an unknown VR)
        raise InputError(f"{path}: not a readable DICOM file ({first_line(exc)})",
                         "check the file is complete and is DICOM Part 10") from exc
    if kind is not None:
        raise InputError(f"{path}: this {kind} object is a result, not an image to analyse",
                         "pass the source images (results are never analysed again)")


def read_dicom(path: str | Path) -> list[np.ndarray]:
    """Return the frames of a DICOM file as float32 (H,W) or uint8 (H,W,3) arrays."""
    try:
        import pydicom
    except ImportError as exc:
        raise InputError(f"{path}: reading DICOM needs pydicom", "pip install 'edgemed[dicom]'") from exc
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged file raises many types (fuzzing found BytesLengthException
        # and NotImplementedError for an unknown VR besides the usual ones): each is the same one-line answer
        raise InputError(f"{path}: not a readable DICOM file ({first_line(exc)})",
                         "check the file is complete and is DICOM Part 10") from exc
    check_not_result(ds, path)
    if "PixelData" not in ds:
        raise InputError(f"{path}: DICOM file has no pixel data", "pass an image object, not a report or SR")
    from ..preprocess import MAX_IMAGE_PIXELS

    try:
        declared = int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1) or 1)
    except Exception as exc:  # noqa: BLE001 - elements are parsed lazily: a damaged one fails here, in any type
        raise InputError(f"{path}: DICOM file lacks valid Rows/Columns", "the file is damaged") from exc
    if declared > 4 * MAX_IMAGE_PIXELS or int(ds.Rows) * int(ds.Columns) > MAX_IMAGE_PIXELS:
        raise InputError(f"{path}: DICOM declares {declared} pixels, beyond edgemed's limit",
                         "downsample or split the series before analysis")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for missing decoders and bad data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise InputError(
            f"{path}: cannot decode DICOM pixel data (transfer syntax {name}: {first_line(exc)})",
            "install a decoder plugin for it (e.g. pip install pylibjpeg pylibjpeg-openjpeg) "
            "or export the study uncompressed",
        ) from exc

    try:
        return _frames(ds, pixels)
    except Exception as exc:  # noqa: BLE001 - a damaged LUT, slope or photometric element, in whatever type
        raise InputError(f"{path}: cannot interpret the DICOM pixel data ({first_line(exc)})",
                         "the file is damaged; export it again") from exc


def _frames(ds, pixels: np.ndarray) -> list[np.ndarray]:
    """Rescale (modality LUT), invert MONOCHROME1, apply palettes, split frames."""
    from pydicom.pixels import apply_modality_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)

    if samples == 1:
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            rgb = apply_color_lut(pixels, ds)
            rgb = _palette_to_uint8(rgb)
            return _split(rgb, frames, colour=True)
        values = apply_modality_lut(pixels, ds).astype(np.float32)
        if photometric == "MONOCHROME1":
            # Inverted greyscale: high stored values are dark. Flip within the rescaled range.
            values = values.max() + values.min() - values
        return _split(values, frames, colour=False)

    # pydicom >= 3 returns YBR data converted to RGB (pixel_array's as_rgb default).
    return _split(np.asarray(pixels), frames, colour=True)


def _palette_to_uint8(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8:
        return rgb
    top = 65535.0 if rgb.max() > 255 else 255.0
    return np.clip(np.round(rgb.astype(np.float64) / top * 255.0), 0, 255).astype(np.uint8)


def _split(array: np.ndarray, frames: int, colour: bool) -> list[np.ndarray]:
    per_frame_ndim = 3 if colour else 2
    if array.ndim == per_frame_ndim + 1:
        return [np.ascontiguousarray(f) for f in array]
    return [np.ascontiguousarray(array)]

