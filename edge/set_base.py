"""What every set of cases shares (images, signal windows): named cases and their subsets, and the guarded
reader of the ``.npz`` files sets come in. Below both kinds of set, so neither imports the other's module."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError

MAX_SET_ELEMENTS = 1 << 30  # one array of a set: 1 G elements (4 GiB of float32) is beyond a set, or hostile


class Npz:
    """An ``.npz`` of untrusted arrays, read one array at a time: each array's header is read before its data,
    so a claim of a huge array is refused unread, and whatever a damaged archive raises (zipfile's BadZipFile,
    zlib's error, numpy's header parser: ValueError, SyntaxError, TokenError, EOFError; object arrays) is one
    :class:`InputError` naming the file (found by the fuzz suite, tests/fuzz)."""

    def __init__(self, path: Path, what: str = "set") -> None:
        self.path, self.what = Path(path), what
        try:
            self._data = np.load(self.path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            raise self._error(exc) from exc
        if not hasattr(self._data, "files"):  # a plain .npy under an .npz name
            raise InputError(f"{self.path}: not an .npz archive (a single array)", "save the set with numpy.savez")
        self.files: list[str] = list(self._data.files)

    def _error(self, exc: BaseException) -> InputError:
        return InputError(f"{self.path}: not a readable .npz {self.what} ({type(exc).__name__}: {str(exc)[:160]})",
                          "save it again with numpy.savez")

    def __contains__(self, key: str) -> bool:
        return key in self.files

    def __getitem__(self, key: str) -> np.ndarray:
        from numpy.lib import format as npy

        try:
            with self._data.zip.open(f"{key}.npy") as f:
                version = npy.read_magic(f)
                header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
                shape, _, _ = header(f)
            if int(np.prod(shape, dtype=np.float64)) > MAX_SET_ELEMENTS:
                raise InputError(f"{self.path}: array {key!r} of shape {shape} is beyond edgemed's size limit",
                                 "split the set")
            return self._data[key]
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            raise self._error(exc) from exc

    def close(self) -> None:
        self._data.close()

    def __enter__(self) -> Npz:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class IndexedSet:
    """What every set of cases shares (images, signal windows): named cases, evenly spaced subsets, lookup
    by name. A subclass provides ``names`` and ``select(indices)``."""

    names: list[str]
    unit = "images"  # what a case is called in messages

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, count: int | None):
        """An evenly spaced, deterministic subset (every class of a sorted set stays represented)."""
        if count is None or count >= len(self):
            return self
        if count < 1:
            raise InputError(f"asked for {count} {self.unit}", "use a count of at least 1")
        return self.select(np.linspace(0, len(self) - 1, count).round().astype(int).tolist())

    def select_names(self, names: list[str]):
        """The cases with these names, in this order; None if any is gone."""
        where = {n: i for i, n in enumerate(self.names)}
        return self.select([where[n] for n in names]) if all(n in where for n in names) else None
