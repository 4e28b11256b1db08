"""Coverage-guided fuzzing (Atheris, libFuzzer for Python) of the two parsers where coverage guidance helps most:
the DICOM reader (``edgemed.io.dicom.read_dicom``: pydicom's parser, pixel decoding, the modality LUT) and the manifest
parser (``Manifest.from_json``: JSON, msgspec's typed records, the cross-field checks).

Run by ``tests/fuzz/test_fuzz_atheris.py`` for a bounded number of runs in CI; for a nightly-length run:

    .venv/bin/python tests/fuzz/atheris_targets.py dicom -max_total_time=3600 CORPUS_DIR SEED_DIR
    .venv/bin/python tests/fuzz/atheris_targets.py manifest -max_total_time=3600 CORPUS_DIR SEED_DIR

The property is the suite's: each input is read, or refused with an EdgemedError of one line; any other exception
is a crash, which libFuzzer reports with the input that caused it (written as ``crash-*``; keep it in
tests/fixtures/fuzz and add a regression test).
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris

# Only the parsers under test are instrumented (everything edgemed imports, instrumented, took 30 s to start here).
with atheris.instrument_imports(include=["pydicom", "edgemed.io.dicom", "edgemed.manifest", "edgemed.manifest_v1",
                                         "edgemed.preprocess", "edgemed.signal_preprocess"]):
    import pydicom  # noqa: F401 - its parser is what the DICOM target explores

    from edgemed import manifest as _manifest
    from edgemed.io import dicom as _dicom
from edgemed.errors import EdgemedError

_SCRATCH = os.path.join(tempfile.mkdtemp(prefix="edgemed-atheris-"), "case.dcm")


def _one_line(exc: EdgemedError) -> None:
    if len(str(exc).splitlines()) != 1:
        raise AssertionError(f"a message of several lines: {str(exc)!r}")


def dicom_target(data: bytes) -> None:
    with open(_SCRATCH, "wb") as f:
        f.write(data)
    try:
        frames = _dicom.read_dicom(_SCRATCH)
    except EdgemedError as exc:
        _one_line(exc)
        return
    for frame in frames:
        assert frame.ndim in (2, 3), frame.shape


def manifest_target(data: bytes) -> None:
    try:
        _manifest.Manifest.from_json(data, "fuzz")
    except EdgemedError as exc:
        _one_line(exc)


TARGETS = {"dicom": dicom_target, "manifest": manifest_target}

if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")  # pydicom warns on every damaged element; libFuzzer's output is what matters
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()
