"""Hypothesis strategies for hostile input: arrays of every dtype, rank, size and memory layout, objects that
are not arrays, files with image and signal extensions, and mutations of real files (DICOM length fields
included).

Array contents come from a numpy generator seeded by a drawn integer, so a 4,097-pixel side costs no more to
generate than a 4-pixel one; Hypothesis still shrinks the shape, the dtype, the kind of content and the seed.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

NUMERIC = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16", "float32", "float64"]
ODD = ["bool", ">f4", ">u2", ">i4", "longdouble", "complex64", "complex128", "object", "<U4", "S3", "V3",
       "datetime64[s]", "timedelta64[ms]"]
MAX_ELEMENTS = 1 << 20  # 1 M elements (8 MB of float64) per generated array: a 4,097-pixel side, still quick
SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, 5e-324, 65504.0, 1e20, 1e38, -1e38, 3.4e38, -3.4e38, 1e300,
            -1e300, 1.7976931348623157e308]

sides = st.one_of(st.integers(1, 8), st.integers(9, 300), st.sampled_from([0, 1, 2, 3, 4095, 4096, 4097]))


@st.composite
def shapes(draw, min_rank: int = 0, max_rank: int = 5) -> tuple[int, ...]:
    shape = list(draw(st.lists(sides, min_size=min_rank, max_size=max_rank)))
    while math.prod(shape) > MAX_ELEMENTS:
        shape[int(np.argmax(shape))] //= 2
    return tuple(shape)


def image_shapes() -> st.SearchStrategy[tuple[int, ...]]:
    """Mostly what an image could be ((H, W), (H, W, C)), sometimes any rank."""
    channels = st.sampled_from([0, 1, 2, 3, 4, 5, 17])
    return st.one_of(
        st.tuples(sides, sides),
        st.tuples(sides, sides, channels),
        shapes(),
    ).map(_cap)


_IMAGE_SHAPES = None  # set below, once image_shapes() can be built


def _cap(shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = list(shape)
    while math.prod(shape) > MAX_ELEMENTS:
        shape[int(np.argmax(shape))] //= 2
    return tuple(shape)


def fill(dtype: np.dtype, shape: tuple[int, ...], kind: str, seed: int, special: float) -> np.ndarray:
    """An array of ``dtype`` and ``shape`` filled as ``kind`` says, from a generator seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind in "OUSVMm":
        if dt.kind == "O":
            out = np.empty(shape, dtype=object)
            out.fill(None if kind == "zeros" else special)
            return out
        return np.zeros(shape, dtype=dt)
    if dt.kind == "b":
        return rng.random(shape) > 0.5 if kind != "zeros" else np.zeros(shape, bool)
    if kind == "zeros":
        return np.zeros(shape, dtype=dt)
    if dt.kind in "ui":
        info = np.iinfo(dt)
        if kind == "const":
            return np.full(shape, info.max if special > 0 else info.min, dtype=dt)
        lo, hi = (info.min, info.max) if kind in ("uniform", "specials") else (0, min(info.max, 255))
        return rng.integers(lo, hi, size=shape, dtype=dt.newbyteorder("="), endpoint=True).astype(dt)
    # floats and complex
    with np.errstate(all="ignore"):
        if kind == "const":
            out = np.full(shape, special, dtype=np.float64)
        elif kind == "uniform":
            out = rng.random(shape) * 255.0
        elif kind == "normal":
            out = rng.standard_normal(shape) * abs(special if np.isfinite(special) and special else 1.0)
        else:  # base content with special values at random places
            out = rng.random(shape) * 255.0
            if out.size:
                idx = rng.integers(0, out.size, size=max(1, out.size // 50))
                out.reshape(-1)[idx] = special
        return out.astype(dt)


_IMAGE_SHAPES = image_shapes()
LAYOUTS = ["C", "F", "strided", "reversed", "readonly", "swapped", "broadcast", "transposed"]


def lay_out(x: np.ndarray, layout: str) -> np.ndarray:
    """The same values in another memory layout, as cameras, DICOM decoders and slicing give them."""
    if layout == "F":
        return np.asfortranarray(x)
    if layout == "strided" and x.ndim:
        big = np.repeat(x, 2, axis=0)
        return big[::2]
    if layout == "reversed" and x.ndim:
        return x[::-1]
    if layout == "readonly":
        x = x.copy()
        x.setflags(write=False)
        return x
    if layout == "swapped" and x.dtype.kind in "uif" and x.dtype.itemsize > 1:
        return x.byteswap().view(x.dtype.newbyteorder())
    if layout == "broadcast" and x.ndim:
        return np.broadcast_to(x[:1], x.shape)
    if layout == "transposed":
        return x.T
    return x


_KINDS = st.sampled_from(["uniform", "zeros", "const", "normal", "specials"])
_SPECIAL = st.sampled_from(SPECIALS)
_SEED = st.integers(0, 2**32 - 1)
_LAYOUT = st.sampled_from(LAYOUTS)
_DTYPES = st.sampled_from(NUMERIC * 2 + ODD)


def arrays(shape_strategy=None, dtypes: list[str] | None = None) -> st.SearchStrategy[np.ndarray]:
    """Arrays of any dtype (``dtypes``), shape, content and layout. Strategies are built once here: Hypothesis
    spends most of a cheap example's time in strategy bookkeeping, which cached strategies avoid."""
    return st.builds(_array, st.sampled_from(dtypes) if dtypes else _DTYPES,
                     shape_strategy if shape_strategy is not None else _IMAGE_SHAPES, _KINDS, _SPECIAL, _SEED, _LAYOUT)


def _array(dtype: str, shape: tuple[int, ...], kind: str, special: float, seed: int, layout: str) -> np.ndarray:
    return lay_out(fill(dtype, shape, kind, seed, special), layout)


def not_arrays(tmp: Path) -> st.SearchStrategy:
    """What a caller might pass instead of a frame: scalars, strings, paths that are not images, nested lists."""
    return st.one_of(
        st.sampled_from([None, True, 0, -1, 1.5, float("nan"), 1j, b"", b"\x89PNG", "", "x", ".", "..", "/",
                         "/dev/null", "no/such/file.png", str(tmp), Path(tmp), Path(""), Path("/"), Ellipsis,
                         object(), {}, {"image": 1}, set(), (), [], [[]], memoryview(b"abc"), range(3)]),
        st.lists(st.integers(-300, 300), max_size=20),
        st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=6), max_size=6),
        st.text(max_size=40),
        st.binary(max_size=40),
        st.builds(np.float32, st.floats(width=32)),
        st.builds(np.array, st.floats()),
    )


# --- files --------------------------------------------------------------------------------------------------

IMAGE_SUFFIXES = [".png", ".PNG", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy", ".dcm", ".dicom", "", ".txt",
                  ".gif"]


@st.composite
def npy_bytes(draw) -> bytes:
    """An ``.npy`` file: a real array of any dtype and layout (object arrays pickled), or a damaged one."""
    x = draw(arrays(shapes(max_rank=4), NUMERIC + ["bool", "object", ">f8", "<U2", "complex64"]))
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=True)
    raw = buf.getvalue()
    how = draw(st.sampled_from(["whole", "whole", "empty", "cut", "header", "magic"]))
    if how == "empty":
        return b""
    if how == "cut":
        return raw[:draw(st.integers(0, max(0, len(raw) - 1)))]
    if how == "header":  # a header that claims another shape, dtype or order
        claim = draw(st.sampled_from([b"(4097, 4097, 4097)", b"(-1,)", b"()", b"(0,)", b"(100000000000,)",
                                      b"'|O'", b"'<f16'", b"True", b"'x'"]))
        head_end = raw.index(b"\n") + 1
        head = raw[10:head_end].decode("latin1")
        key = draw(st.sampled_from(["'shape': ", "'descr': ", "'fortran_order': "]))
        start = head.find(key) + len(key)
        stop = head.find(", '", start) if head.find(", '", start) > 0 else head.find("}", start)
        new = (head[:start] + claim.decode() + head[stop:]).encode("latin1")
        return raw[:8] + struct.pack("<H", len(new)) + new + raw[head_end:]
    if how == "magic":
        return raw[:6] + draw(st.binary(min_size=2, max_size=2)) + raw[8:]
    return raw


def mutate(data: bytes, draw, max_ops: int = 6, length_fields: list[tuple[int, int]] | None = None) -> bytes:
    """Byte flips, cuts, insertions, duplicated chunks and, where their offsets are known, blown-up length
    fields (little-endian, 2 or 4 bytes wide)."""
    raw = bytearray(data)
    ops = ["flip", "cut", "insert", "dup", "zero"] + (["length"] * 3 if length_fields else [])
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(ops))
        pos = draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del raw[pos:]
        elif op == "insert":
            raw[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "dup" and raw:
            size = draw(st.integers(1, 256))
            raw[pos:pos] = raw[pos:pos + size]
        elif op == "zero":
            size = draw(st.integers(1, 64))
            raw[pos:pos + size] = bytes(len(raw[pos:pos + size]))
        elif op == "length" and length_fields:
            at, width = draw(st.sampled_from(length_fields))
            if at + width > len(raw):
                continue
            old = int.from_bytes(raw[at:at + width], "little")
            top = (1 << (8 * width)) - 1
            value = draw(st.sampled_from([0, 1, old + 1, max(0, old - 1), old * 2, top, top - 1, top >> 1,
                                          0xFFFFFFFF & top]) | st.integers(0, top))
            raw[at:at + width] = (value & top).to_bytes(width, "little")
    return bytes(raw)


@dataclass(frozen=True)
class Seed:
    name: str
    data: bytes = field(repr=False)
    length_fields: list[tuple[int, int]] = field(repr=False)


LONG_VRS = {b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"OD", b"OL", b"OV", b"UC", b"UR"}


def dicom_length_fields(data: bytes) -> list[tuple[int, int]]:
    """Offsets and widths of the value-length fields of a DICOM file's top-level elements: the file meta group
    walked here (always explicit VR little endian), the dataset's found by pydicom's own reader, so a mutation
    can blow one up exactly."""
    import pydicom

    fields = []
    at = 132 if data[128:132] == b"DICM" else len(data)
    while at + 8 <= len(data) and data[at:at + 2] == b"\x02\x00":
        vr = data[at + 4:at + 6]
        if vr in LONG_VRS:
            fields.append((at + 8, 4))
            at += 12 + int.from_bytes(data[at + 8:at + 12], "little")
        else:
            fields.append((at + 6, 2))
            at += 8 + int.from_bytes(data[at + 6:at + 8], "little")
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception:  # noqa: BLE001
        return fields
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        tell = getattr(raw, "value_tell", None)
        if tell is None:
            continue
        long_form = raw.is_implicit_VR or (raw.VR or "").encode() in LONG_VRS
        fields.append((tell - 4, 4) if long_form else (tell - 2, 2))
    return [(at, w) for at, w in fields if 0 <= at < len(data)]


class Blobs(dict):
    """Seed files by name, shown by name only in a failure report."""

    def __repr__(self) -> str:
        return f"Blobs({sorted(self)})"
