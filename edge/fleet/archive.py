"""A bundle as one file for delivery: a plain, byte-reproducible tar of its regular files.

TUF signs files, a bundle is a folder: the repository therefore publishes the bundle as one archive whose
length and SHA-256 the targets role signs. The archive is deterministic (sorted names, zero times and owners,
fixed modes), so publishing the same bundle twice gives the same bytes. Unpacking treats the archive as
hostile even after TUF verified it (the signer may have been careless): only regular files and folders,
names inside the destination, a bounded count and size.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path, PurePosixPath

from ..errors import BundleError

MAX_MEMBERS = 256
MAX_BYTES = 8 << 30  # 8 GiB: far above any edge model, far below a disk-filling archive


def pack(bundle: Path, out: Path) -> Path:
    """Write ``out`` holding every regular file under ``bundle`` (relative names), reproducibly."""
    files = sorted(p for p in Path(bundle).rglob("*") if p.is_file() and not p.is_symlink())
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            info = tarfile.TarInfo(path.relative_to(bundle).as_posix())
            info.size = path.stat().st_size
            info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, 0, "", ""
            with open(path, "rb") as f:
                tar.addfile(info, f)
    return out


def _member_path(dest: Path, name: str, archive: Path) -> Path:
    pure = PurePosixPath(name)
    if not name or "\\" in name or "\x00" in name or pure.is_absolute() or ".." in pure.parts:
        raise BundleError(f"{archive}: member {name!r} would land outside the bundle", "refusing the archive")
    return dest / pure


def unpack(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into the existing empty folder ``dest``; refuse links, devices and escapes."""
    try:
        with tarfile.open(archive, "r:") as tar:
            members = tar.getmembers()
            if len(members) > MAX_MEMBERS or sum(m.size for m in members) > MAX_BYTES:
                raise BundleError(f"{archive}: {len(members)} members, {sum(m.size for m in members)} bytes: "
                                  "more than a bundle holds", "refusing the archive")
            for m in members:
                path = _member_path(dest, m.name, archive)
                if m.isdir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                if not m.isfile():
                    raise BundleError(f"{archive}: member {m.name!r} is not a regular file (link or device)",
                                      "refusing the archive")
                path.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(m)
                with open(path, "xb") as f:  # "x": a name twice in the archive is refused, never overwritten
                    while chunk := source.read(1 << 20):
                        f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{archive}: not a readable bundle archive ({exc})", "refusing it") from exc
    except FileExistsError as exc:
        raise BundleError(f"{archive}: a file appears twice ({exc.filename})", "refusing the archive") from exc
