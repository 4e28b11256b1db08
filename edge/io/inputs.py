"""The frames a ``predict`` run reads, each with a name to show and a file stem no other frame shares.

A folder stands for the images in it; a multi-frame file (a DICOM cine loop, a 3-D ``.npy``, a
multi-page TIFF) gives one frame per frame. Output files are named from the stem, so every frame
gets its own: ``clip_frame007``, and two inputs that share a file name (``a/img000.png``,
``b/img000.png``) are told apart by their folders (``a_img000``, ``b_img000``). Nothing is
overwritten within a run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .images import list_images, read_frames


@dataclass(frozen=True)
class Frame:
    name: str  # what the user sees: "scan.dcm#3"
    stem: str  # unique output file stem: "scan_frame003"
    path: Path
    index: int | None  # frame number inside a multi-frame file
    image: np.ndarray


def expand(paths: Sequence[Path], signals: bool = False) -> list[Path]:
    """Files as given, folders as their images (or, with ``signals``, their recordings), sorted; a missing path is
    an error naming it."""
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            images = list_signals(path) if signals else list_images(path)
            if not images:
                raise InputError(f"{path}: the folder holds no {'recordings' if signals else 'images'}",
                                 "pass recordings (WFDB .hea, DICOM waveform, CSV, NPY) or a folder of them" if signals
                                 else "pass image files, or a folder of PNG, JPEG, TIFF, NPY or DICOM files")
            out += images
        elif path.is_file():
            out.append(path)
        else:
            raise InputError(f"{path}: no such file or folder", "check the path")
    return out


def unique_stems(paths: Sequence[Path]) -> dict[Path, str]:
    """A file stem per path, no two alike: the bare stem where it is unique, else prefixed with as many
    parent folder names as it takes (and, failing that, its position)."""
    resolved = [p.resolve() for p in paths]
    stems: dict[Path, str] = {}
    depth = {p: 0 for p in resolved}
    while True:
        names = {p: "_".join([*p.parent.parts[len(p.parent.parts) - depth[p]:], p.stem]) if depth[p] else p.stem
                 for p in resolved}
        clashes = {n for n in names.values() if list(names.values()).count(n) > 1}
        grow = [p for p in resolved if names[p] in clashes and depth[p] < len(p.parent.parts)]
        if not clashes or not grow:
            break
        for p in grow:
            depth[p] += 1
    seen: dict[str, int] = {}
    for original, p in zip(paths, resolved):
        name = names[p]
        seen[name] = seen.get(name, 0) + 1
        stems[original] = name if seen[name] == 1 else f"{name}_{seen[name]}"
    return stems


def list_signals(folder: Path) -> list[Path]:
    """Recordings in a folder, sorted: WFDB records by their header (the .dat goes with it), CSV, NPY, DICOM."""
    from .signals import SIGNAL_SUFFIXES

    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix.lower() in SIGNAL_SUFFIXES and p.suffix.lower() != ".dat")


def file_frames(path: Path, stem: str) -> list[Frame]:
    """Every frame of one file, each with its own output stem."""
    images = read_frames(path)
    if len(images) == 1:
        return [Frame(path.name, stem, path, None, images[0])]
    width = max(3, len(str(len(images) - 1)))
    return [Frame(f"{path.name}#{i}", f"{stem}_frame{i:0{width}d}", path, i, image) for i, image in enumerate(images)]


def frames(paths: Sequence[Path]) -> Iterator[Frame]:
    files = expand(paths)
    stems = unique_stems(files)
    for path in files:
        yield from file_frames(path, stems[path])
