"""Reading images from disk: PNG, JPEG, TIFF, NPY and DICOM, one frame or many.

Every decoder failure becomes an :class:`InputError` naming the file, because scanner software
must be able to show the operator why a frame was not analysed.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ..preprocess import MAX_IMAGE_PIXELS

PIL_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
IMAGE_SUFFIXES = PIL_SUFFIXES | DICOM_SUFFIXES | {".npy"}

# A frame larger than this is refused before it is decoded (decompression bombs declare huge sizes).
MAX_PIXELS = MAX_IMAGE_PIXELS


def is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


if TYPE_CHECKING:
    from PIL import Image


def _pil_frame(frame: Image.Image) -> np.ndarray:
    mode = frame.mode
    if mode in ("RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        frame = frame.convert("RGB")
    elif mode in ("LA", "1"):
        frame = frame.convert("L")
    array = np.asarray(frame)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("="))
    return np.array(array)


def _read_pil(path: Path) -> list[np.ndarray]:
    from PIL import Image, ImageSequence, UnidentifiedImageError  # here: a signal bundle never reads an image file

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_PIXELS or w < 1 or h < 1:
                    raise InputError(f"{path}: declares a {w}x{h} image, beyond edgemed's {MAX_PIXELS} pixel limit",
                                     "downsample the image before analysis")
                frames = [_pil_frame(f.copy()) for f in ImageSequence.Iterator(img)]
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{path}: image is too large to decode safely ({exc})",
                         "downsample the image before analysis") from exc
    except UnidentifiedImageError as exc:
        raise InputError(f"{path}: not a readable image", "pass a PNG, JPEG, TIFF, NPY or DICOM file") from exc
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders meet damaged files with many types (OSError,
        # SyntaxError, ValueError; fuzzing found TypeError "Missing dimensions" from a TIFF with a changed tag)
        raise InputError(f"{path}: image data is corrupt or truncated ({type(exc).__name__}: {str(exc)[:160]})",
                         "re-export or re-copy the file") from exc
    return frames


def read_npy(path: Path, max_elements: int, what: str = "array") -> np.ndarray:
    """A plain ``.npy`` array, its header read first so that a huge claim is refused unread. numpy's reader
    meets a damaged header with whatever its parser raises (fuzzing found IndexError and MemoryError besides
    ValueError, OSError and EOFError): each is the same one-line answer."""
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except Exception as exc:  # noqa: BLE001 - see the docstring
        raise InputError(f"{path}: not a readable .npy {what} ({type(exc).__name__}: {str(exc)[:160]})",
                         "save with numpy.save; object arrays are refused") from exc
    if array.size > max_elements:
        raise InputError(f"{path}: {what} of shape {array.shape} is beyond edgemed's size limit",
                         "downsample or split it before analysis")
    try:
        return np.array(array)
    except (ValueError, OSError) as exc:
        raise InputError(f"{path}: the .npy {what} data cannot be read ({exc})", "save it again") from exc


def _read_npy(path: Path) -> list[np.ndarray]:
    array = read_npy(path, 4 * MAX_PIXELS)
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3)):
        return [array]
    if array.ndim == 3:
        return list(array)
    raise InputError(f"{path}: array shape {array.shape} is not (H,W), (H,W,C) or (frames,H,W)",
                     "save one frame or a stack of grey frames")


def read_frames(path: str | Path) -> list[np.ndarray]:
    """All frames of an image file, each (H,W) or (H,W,3), in the file's own dtype and values."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file", "check the path")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _read_npy(path)
    if is_dicom(path):
        from .dicom import read_dicom

        return read_dicom(path)
    if suffix in PIL_SUFFIXES or suffix == "":
        return _read_pil(path)
    raise InputError(f"{path}: unknown image type {suffix!r}",
                     f"pass one of {', '.join(sorted(IMAGE_SUFFIXES))}")


def read_image(path: str | Path) -> np.ndarray:
    """Exactly one frame; a multi-frame file is an error rather than a silent pick of frame 0."""
    frames = read_frames(path)
    if len(frames) != 1:
        raise InputError(f"{path}: holds {len(frames)} frames, predict takes one",
                         "use edgemed.read_frames(path) with pipe.stream(), or the CLI, which runs every frame")
    return frames[0]


def list_images(folder: Path) -> list[Path]:
    """Image files in a folder, sorted by name so that calibration sets hash reproducibly."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
