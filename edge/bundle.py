"""The bundle: a directory whose manifest ``edgemed.json`` describes and hashes every file.

Reading treats the manifest as untrusted data: it is parsed as JSON only, every path it names
must stay inside the bundle, and every listed file must match its SHA-256 and size before any
backend sees it. Writing happens in a temporary sibling directory renamed into place, so a
crash or a failed check never leaves a half-written bundle where a scanner could load it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ._version import BUNDLE_SCHEMA_VERSION
from .errors import BundleError
from .hashing import sha256_file
from .preprocess import Preprocessor, validate_spec

MANIFEST = "edgemed.json"
REFERENCE = "reference.npz"
REPORT = "report.json"
MAX_MANIFEST_BYTES = 4 << 20
MAX_INPUT_ELEMENTS = 1 << 28  # 268M floats (1 GiB): a declared shape beyond this is hostile or a mistake
TASKS = ("classification", "segmentation")


def _safe_member(root: Path, name: Any, what: str) -> Path:
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise BundleError(f"bundle {root}: {what} has an invalid file name {name!r}", "rebuild the bundle")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or name.startswith("~"):
        raise BundleError(f"bundle {root}: {what} names {name!r}, outside the bundle",
                          "refusing it; rebuild the bundle with edgemed convert")
    path = root / pure
    try:
        resolved = path.resolve(strict=False)
    except OSError as exc:
        raise BundleError(f"bundle {root}: cannot resolve {name!r} ({exc})", "rebuild the bundle") from exc
    if root.resolve() not in resolved.parents:
        raise BundleError(f"bundle {root}: {name!r} resolves outside the bundle (symlink?)",
                          "refusing it; rebuild the bundle with edgemed convert")
    return path


def _check_shape(root: Path, shape: Any) -> list[int | str]:
    if not isinstance(shape, list) or len(shape) != 4:
        raise BundleError(f"bundle {root}: input shape {shape!r} is not a 4-D list", "rebuild the bundle")
    dims = []
    for d in shape:
        if isinstance(d, str) and d:
            dims.append(d)
        elif isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 1 << 20:
            dims.append(d)
        else:
            raise BundleError(f"bundle {root}: input shape {shape!r} has an invalid dimension {d!r}",
                              "rebuild the bundle")
    static = [d if isinstance(d, int) else 1 for d in dims]
    if math.prod(static) > MAX_INPUT_ELEMENTS:
        raise BundleError(f"bundle {root}: input shape {shape!r} is implausibly large",
                          "refusing it; rebuild the bundle")
    return dims


class Bundle:
    """A verified, read-only view of a bundle directory."""

    def __init__(self, path: Path, manifest: dict) -> None:
        self.path = path
        self.manifest = manifest

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> Bundle:
        root = Path(path)
        if not root.is_dir():
            raise BundleError(f"bundle {root}: not a directory", "pass the folder edgemed convert wrote (-o)")
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(f"bundle {root}: {MANIFEST} is missing", "pass the folder edgemed convert wrote (-o)")
        if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
            raise BundleError(f"bundle {root}: {MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes",
                              "refusing it; rebuild the bundle")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"bundle {root}: {MANIFEST} is not valid JSON ({exc})",
                              "rebuild the bundle with edgemed convert") from exc
        bundle = cls(root, manifest)
        bundle._check_structure()
        if verify:
            bundle.verify_files()
        return bundle

    # -- structure -------------------------------------------------------------------------
    def _check_structure(self) -> None:
        m, root = self.manifest, self.path
        if not isinstance(m, dict):
            raise BundleError(f"bundle {root}: {MANIFEST} is not a JSON object", "rebuild the bundle")
        version = m.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise BundleError(f"bundle {root}: schema_version is missing or not an integer", "rebuild the bundle")
        if version > BUNDLE_SCHEMA_VERSION:
            raise BundleError(
                f"bundle {root}: schema_version {version} is newer than this edgemed reads "
                f"({BUNDLE_SCHEMA_VERSION})",
                "upgrade edgemed on this device",
            )
        for key in ("model", "input", "output", "preprocess", "artifacts"):
            if key not in m:
                raise BundleError(f"bundle {root}: {MANIFEST} lacks {key!r}", "rebuild the bundle")
        if m["model"].get("task") not in TASKS:
            raise BundleError(f"bundle {root}: unknown task {m['model'].get('task')!r}", "rebuild the bundle")
        _check_shape(root, m["input"].get("shape"))
        try:
            validate_spec(m["preprocess"])
        except Exception as exc:
            raise BundleError(f"bundle {root}: preprocessing spec refused: {exc}", "rebuild the bundle") from exc
        if not isinstance(m["artifacts"], list) or not m["artifacts"]:
            raise BundleError(f"bundle {root}: no artifacts listed", "rebuild the bundle")
        for entry in self.listed_files():
            _safe_member(root, entry.get("file"), "a listed file")

    def listed_files(self) -> list[dict]:
        """Every file the manifest vouches for: artifacts plus reference and report."""
        entries = list(self.manifest.get("artifacts", [])) + list(self.manifest.get("files", []))
        for e in list(entries):
            if not isinstance(e, dict):
                raise BundleError(f"bundle {self.path}: a file entry is not an object", "rebuild the bundle")
            if "weights" in e:  # OpenVINO IR: the .bin beside the .xml
                entries.append(e["weights"])
        return entries

    def verify_files(self) -> None:
        for entry in self.listed_files():
            name = entry["file"]
            path = _safe_member(self.path, name, "a listed file")
            if not path.is_file():
                raise BundleError(f"bundle {self.path}: {name} is missing", "copy the whole bundle folder again")
            size = path.stat().st_size
            if size != entry.get("bytes"):
                raise BundleError(
                    f"bundle {self.path}: {name} is {size} bytes, the manifest says {entry.get('bytes')} "
                    "(truncated or changed)",
                    "copy the bundle again or rebuild it",
                )
            if sha256_file(path) != entry.get("sha256"):
                raise BundleError(f"bundle {self.path}: {name} does not match its SHA-256 (changed or corrupt)",
                                  "copy the bundle again or rebuild it")

    # -- accessors -------------------------------------------------------------------------
    @property
    def task(self) -> str:
        return self.manifest["model"]["task"]

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["model"].get("labels") or [])

    @property
    def artifacts(self) -> list[dict]:
        return list(self.manifest["artifacts"])

    def file(self, name: str) -> Path:
        return _safe_member(self.path, name, "a file")

    def preprocessor(self) -> Preprocessor:
        spec = self.manifest["input"]
        return Preprocessor(self.manifest["preprocess"], spec["shape"], spec.get("layout", "NCHW"))

    def reference(self) -> dict[str, np.ndarray]:
        path = self.file(REFERENCE)
        if not path.is_file():
            raise BundleError(f"bundle {self.path}: {REFERENCE} is missing", "rebuild the bundle")
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (ValueError, OSError, EOFError) as exc:  # object arrays (pickles) are refused, never loaded
            raise BundleError(f"bundle {self.path}: {REFERENCE} is not a plain array archive ({exc})",
                              "rebuild the bundle") from exc

    def report(self) -> dict:
        path = self.file(REPORT)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def artifact_bytes(artifact: dict) -> int:
    """Size on disk of an artifact, its OpenVINO weights file included."""
    return artifact["bytes"] + artifact.get("weights", {}).get("bytes", 0)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def file_entry(root: Path, name: str, **extra: Any) -> dict:
    path = root / name
    return {"file": name, "sha256": sha256_file(path), "bytes": path.stat().st_size, **extra}


OWNER = ".edgemed-owner"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted(target: Path) -> list[str]:
    """Clean up after a convert that was killed (SIGKILL, power loss) before it could clean up itself.

    A ``.NAME.partial-*`` directory whose writer is gone is removed. A ``.NAME.old-*`` directory is
    the previous bundle caught between the two renames of a replacement: if no bundle stands at
    ``target`` it is put back, otherwise it is removed. Returns what was done, for the log.
    """
    parent = target.parent if str(target.parent) else Path(".")
    done = []
    if not parent.is_dir():
        return done
    for stale in sorted(parent.glob(f".{target.name}.partial-*")):
        try:
            pid = int((stale / OWNER).read_text().strip())
        except (OSError, ValueError):
            pid = -1
        if pid > 0 and _alive(pid) and pid != os.getpid():
            continue  # another convert is writing it right now
        shutil.rmtree(stale, ignore_errors=True)
        done.append(f"removed interrupted {stale.name}")
    for old in sorted(parent.glob(f".{target.name}.old-*")):
        if not target.exists() and (old / "edgemed.json").is_file():
            os.rename(old, target)
            done.append(f"restored the previous bundle from {old.name}")
        else:
            shutil.rmtree(old, ignore_errors=True)
    return done


@contextlib.contextmanager
def atomic_directory(target: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``target`` by renames.

    On any exception (including KeyboardInterrupt) the temporary directory is removed and the
    previous ``target``, if any, is untouched. A process killed outright leaves only hidden
    ``.partial``/``.old`` siblings, which the next conversion to the same target repairs.
    """
    target = Path(target)
    recover_interrupted(target)
    if target.exists() and not force:
        raise BundleError(f"{target} already exists", "pass --force to replace it, or choose another -o")
    if target.exists() and not target.is_dir():
        raise BundleError(f"{target} exists and is not a directory", "choose another -o")
    parent = target.parent if str(target.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a bundle is meant to be shared like any folder
    (tmp / OWNER).write_text(str(os.getpid()))
    try:
        yield tmp
        (tmp / OWNER).unlink()
        for p in tmp.rglob("*"):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
            os.rmdir(old)
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
