"""The minimal failing cases the fuzz suite (tests/fuzz, issue 30) found, kept as ordinary tests: each gave a
silently wrong answer, another exception type than an EdgemedError, or a message of several lines. Files that
broke a decoder are also in tests/fixtures/fuzz (read by test_trust.py's corpus test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgemed
from edgemed.errors import EdgemedError, InputError, OptionError, SignalQualityError
from edgemed.io.images import read_frames
from edgemed.io.signals import read_signal
from edgemed.preprocess import Prepared

CORPUS = Path(__file__).parent / "fixtures" / "fuzz"
BEAT = np.sin(np.arange(540) / 9.0)  # 1.5 s at 360 Hz: one window of the shipped beat models


@pytest.fixture(scope="module")
def ecg(tmp_path_factory):
    from .conftest import convert_ecg_fp32

    with edgemed.load(convert_ecg_fp32(tmp_path_factory.mktemp("ecg") / "ecg_cnn")) as pipe:
        yield pipe


# --- silently wrong answers: NaN probabilities with a label ------------------------------------------------

def test_a_finite_beat_that_overflows_the_model_is_refused_not_answered_with_nan(ecg):
    """1e37 mV once passed every input check (finite, not flat, float32 holds it) and overflowed in the model's first
    layers: predict answered 'N' with probabilities [nan, nan, nan, nan]. No ECG spans over 50 mV, so it is now
    refused before the model, with the fix (an output holding NaN is still refused: the test below)."""
    with pytest.raises(SignalQualityError, match="beyond any ECG in mV.*check the units"):
        ecg.predict(BEAT * 1e37, fs=360, units="mV", leads=("MLII",))
    assert np.isfinite(ecg.predict(BEAT, fs=360, units="mV", leads=("MLII",)).probabilities).all()


def test_a_beat_beyond_float32_is_refused_before_the_model(ecg):
    """1e300 mV is a finite float64; cast to the model's float32 input it became Inf, and NaN came out. Refused
    now by the amplitude no ECG has, before any cast."""
    with pytest.raises(SignalQualityError, match="beyond any ECG in mV"):
        ecg.predict(BEAT * 1e300, fs=360, units="mV", leads=("MLII",))


def test_outputs_holding_nan_never_become_a_result(cnn_bundle):
    """Where every task's result is made (predict, stream, Triton, bench): NaN logits gave label 'benign_or_normal'
    with probabilities [nan, nan] for a float frame of values near 1e38 (issue 30's 20 cases)."""
    with edgemed.load(cnn_bundle) as pipe:
        prepared = Prepared(np.full((1, 1, 28, 28), 3e38, np.float32), (28, 28))
        with pytest.raises(InputError, match="'output' holds NaN or Inf"):
            pipe.finish({"output": np.array([[np.nan, np.nan]], np.float32)}, prepared)


# --- other exception types than EdgemedError ---------------------------------------------------------------

def test_an_empty_npy_given_to_a_signal_bundle_is_an_input_error(ecg, tmp_path):
    """numpy's EOFError 'No data left in file' escaped (issue 30's 13 cases); the image path was clean."""
    with pytest.raises(InputError, match="not a readable .npy signal"):
        ecg.predict(CORPUS / "npy_empty_file.npy", fs=360, units="mV")


@pytest.mark.parametrize("name, why", [
    ("npy_header_empty_descr.npy", "IndexError inside numpy's header parser"),
    ("npy_header_claims_68_gb.npy", "MemoryError: the signal reader allocated what the header claimed"),
])
def test_damaged_npy_headers_are_input_errors_for_images_and_signals(name, why):
    with pytest.raises(InputError, match="not a readable .npy array"):
        read_frames(CORPUS / name)
    with pytest.raises(InputError, match="not a readable .npy signal"):
        read_signal(CORPUS / name, 360, "mV")


def test_a_tiff_with_a_shifted_tag_is_an_input_error():
    """Pillow raised TypeError('Missing dimensions') while copying the frame (one byte inserted at offset 79)."""
    with pytest.raises(InputError, match="corrupt or truncated .*Missing dimensions"):
        read_frames(CORPUS / "tiff_tag_shifted_missing_dimensions.tif")


@pytest.mark.parametrize("describe, error, match", [
    ({"fs": 360, "units": "mV", "gain": 200}, OptionError, "gain: not a description of a signal"),
    ({"fs": [360], "units": "mV"}, InputError, r"fs=\[360\] is not a number"),
    ({"fs": "360", "units": "mV"}, InputError, "fs='360' is not a number"),
    ({"fs": 360, "units": 5}, InputError, "units=5 is not a unit name"),
    ({"fs": 360, "units": "mV", "leads": (1,)}, InputError, "lead names must be strings"),
    ({"fs": 360, "units": "mV", "leads": "MLII"}, InputError, "not a sequence of lead names"),
])
def test_a_beat_described_wrongly_is_an_edgemed_error(ecg, describe, error, match):
    """TypeError (an unknown keyword, a list for fs, a number for units, an int lead name) or a lead name
    split into characters."""
    with pytest.raises(error, match=match):
        ecg.predict(BEAT, **describe)


@pytest.mark.parametrize("path", ["", "."])
def test_a_signal_path_without_a_file_name_is_an_input_error(ecg, path):
    """ValueError: PosixPath('.') has an empty name (from swapping the suffix to look for a WFDB header)."""
    with pytest.raises(InputError, match="not a signal file"):
        ecg.predict(path)


@pytest.mark.parametrize("text, match", [
    (b"\n0.000000\n0.002778", "a header and at least two rows"),  # IndexError: the header line was empty
    (b"time,MLII [mV]\n0,1\n0.1", "line 3 has 1 value"),  # ValueError from a ragged array, misnamed
    (b"time,MLII [mV]\n0,1\n0.1,\xff\n", "not a readable CSV"),  # UnicodeDecodeError
])
def test_damaged_csv_signals_are_input_errors(tmp_path, text, match):
    (tmp_path / "beat.csv").write_bytes(text)
    with pytest.raises(InputError, match=match):
        read_signal(tmp_path / "beat.csv")


def test_beats_at_a_rate_the_qrs_detector_cannot_filter_is_an_input_error(ecg):
    """scipy's ValueError 'Digital filter critical frequencies must be 0 < Wn < 1' from XQRS's 5-20 Hz band at
    fs=7 Hz."""
    with pytest.raises(InputError, match="QRS detector needs a rate above 40 Hz"):
        ecg.beats(np.tile(BEAT, 10), fs=7, units="mV", leads=("MLII",))


# --- messages of several lines -----------------------------------------------------------------------------

def test_a_message_naming_a_file_with_a_line_break_stays_one_line(ecg):
    with pytest.raises(EdgemedError) as info:
        ecg.predict("\r")
    assert len(str(info.value).splitlines()) == 1 and "\\r" in str(info.value)
    assert len(str(InputError("a\nb\u2028c", "fix\x85it")).splitlines()) == 1


# --- sets given to bench and convert -----------------------------------------------------------------------

def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _signal_set(path: Path, **changes) -> Path:
    arrays = {"signals": np.tile(np.sin(np.arange(180) / 5.0), (4, 1)), "fs": 120.0, "units": "mV",
              "leads": np.array(["MLII"])}
    arrays.update(changes)
    return _npz(path, **{k: v for k, v in arrays.items() if v is not None})


@pytest.mark.parametrize("changes, match", [
    ({"fs": "mV"}, "fs is <U2 of shape \\(\\), not one number"),  # ValueError: could not convert string to float
    ({"fs": np.array([360.0, 360.0])}, "fs is float64 of shape \\(2,\\)"),  # TypeError: only 0-dimensional arrays
    ({"adc_gain": np.array([200, 200])}, "adc_gain is int64 of shape \\(2,\\)"),  # the same TypeError
    ({"adc_gain": np.inf}, "adc_gain inf is not positive"),  # every sample became 0 mV: a flat lead, not a gain
    ({"leads": np.array("MLII")}, "leads is <U4 of shape \\(\\)"),  # TypeError: iteration over a 0-d array
    ({"units": np.array(["mV", "mV"])}, "units is <U2 of shape \\(2,\\)"),
])
def test_signal_sets_with_wrong_fields_are_input_errors(tmp_path, changes, match):
    from edgemed.signal_sets import SignalSet

    with pytest.raises(InputError, match=match):
        SignalSet.open(_signal_set(tmp_path / "beats.npz", **changes))


def test_damaged_npz_sets_are_input_errors(tmp_path):
    """zipfile's BadZipFile, numpy's header parser (ValueError, SyntaxError, tokenize.TokenError) and object
    arrays (ValueError) escaped from ImageSet.open and SignalSet.open."""
    from edgemed.datasets import ImageSet

    good = _npz(tmp_path / "good.npz", images=np.zeros((3, 28, 28), np.uint8)).read_bytes()
    (tmp_path / "cut.npz").write_bytes(good[:len(good) // 2])
    with pytest.raises(InputError, match="cut.npz: not a readable .npz"):
        ImageSet.open(tmp_path / "cut.npz")
    header = good.index(b"{'descr'")
    (tmp_path / "header.npz").write_bytes(good[:header + 2] + b"e" + good[header + 3:])  # 'descr' -> 'eescr'
    with pytest.raises(InputError, match="header.npz: not a readable .npz"):
        ImageSet.open(tmp_path / "header.npz")
    np.savez(tmp_path / "objects.npz", frame_000=np.array([None, 1], dtype=object))
    with pytest.raises(InputError, match="Object arrays cannot be loaded"):
        ImageSet.open(tmp_path / "objects.npz")
    np.save(tmp_path / "plain.npy", np.zeros((3, 28, 28)))
    (tmp_path / "plain.npy").rename(tmp_path / "plain.npz")
    with pytest.raises(InputError, match="not an .npz archive"):
        ImageSet.open(tmp_path / "plain.npz")


@pytest.mark.parametrize("labels, match", [
    ("file,lable\nbreastmnist_test_000.png,1\n", "the CSV header is \\['file', 'lable'\\]"),  # KeyError 'label'
    ("file,label\nbreastmnist_test_000.png\n", "no label for breastmnist_test_000.png"),  # None.isdigit()
    (np.full(8, 95), "class index 0..1 per image"),  # IndexError in the confusion matrix
    (np.array(1), "not one label per image"),  # TypeError: len() of unsized object
    (np.array([""] * 8), "not one label per image"),  # ValueError: invalid literal for int()
    (None, "no such labels file"),  # FileNotFoundError
])
def test_labels_that_do_not_fit_are_input_errors(cnn_bundle, tmp_path, labels, match):
    from edgemed.benchmarks.run import run_bench
    from edgemed.samples import samples_dir

    if isinstance(labels, str):
        path = tmp_path / "labels.csv"
        path.write_text(labels)
    elif labels is None:
        path = tmp_path / "missing.csv"
    else:
        path = _npz(tmp_path / "labels.npz", labels=labels)
    with pytest.raises(InputError, match=match):
        run_bench(cnn_bundle, data=samples_dir("breastmnist"), labels=path, runs=2, warmup=0)


# --- the upload page ---------------------------------------------------------------------------------------

@pytest.fixture
def page(cnn_bundle, tmp_path):
    pytest.importorskip("flask", reason="flask not installed (pip install 'edgemed[view]')")
    from edgemed.serve.view import make_app

    with edgemed.load(cnn_bundle) as pipe:
        yield make_app(pipe, tmp_path).test_client(), tmp_path


@pytest.mark.parametrize("name", ["..", ".", "x\x00.png", "../../escape.png"])
def test_an_upload_named_to_escape_its_folder_is_read_inside_it(page, name):
    """'..' and '.' saved the upload onto a folder (IsADirectoryError: a 500); a name stays inside its job."""
    import io

    from PIL import Image

    client, workdir = page
    buf = io.BytesIO()
    Image.fromarray(np.full((28, 28), 90, np.uint8)).save(buf, format="PNG")
    answer = client.post("/predict", data={"file": (io.BytesIO(buf.getvalue()), name)})
    assert answer.status_code in (200, 400), answer.status_code
    assert not [p for p in workdir.parent.iterdir() if p.name == "escape.png"]
    assert not [p for p in workdir.rglob("*") if p.is_file()]  # the upload is gone with its request


def test_a_download_with_an_overlong_job_name_is_not_found(page):
    """A 5,000-character job name raised OSError ENAMETOOLONG from the file system (a 500)."""
    client, _ = page
    assert client.get("/download/" + "a" * 5000 + "/x.dcm").status_code == 404
    assert client.get("/download/0123456789abcdef/x.dcm").status_code == 404


# --- the DICOM node ----------------------------------------------------------------------------------------

class _Event:
    """What pynetdicom hands a C-STORE handler: the dataset and its file meta."""

    def __init__(self, ds) -> None:
        self.dataset, self.file_meta = ds, ds.file_meta


@pytest.mark.parametrize("change, log", [
    ({"SOPInstanceUID": ""}, "is not a UID"),  # the results were written beside the outbox (outbox.sr.dcm)
    ({"SOPInstanceUID": "1.2/../../x"}, "is not a UID"),  # a path out of the outbox
    ({"Modality": "SEG"}, "modality SEG object is a result"),  # highdicom's ValueError reached the node as unexpected
])
def test_the_node_refuses_what_it_cannot_name_or_analyse(cnn_bundle, tmp_path, caplog, change, log):
    pydicom = pytest.importorskip("pydicom")
    from edgemed.pacs.node import FAILURE_CANNOT_UNDERSTAND, Node

    from .conftest import DICOM

    ds = pydicom.dcmread(DICOM / "CT_small.dcm")
    for key, value in change.items():
        setattr(ds, key, value)
    with edgemed.load(cnn_bundle) as pipe, caplog.at_level("WARNING", logger="edgemed.listen"):
        node = Node({"*": pipe}, None, tmp_path / "outbox")
        assert node.handle_store(_Event(ds)) == FAILURE_CANNOT_UNDERSTAND
    assert log in caplog.text and "unexpected" not in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing written, inside the outbox or beside it


def test_a_source_with_old_style_study_date_and_time_gets_its_results(cnn_bundle, tmp_path):
    """pydicom's ExplVR_BigEnd.dcm (a real US object) carries ACR-NEMA style StudyDate '1997.04.24' and StudyTime
    '14:04:38', which TM does not allow: predict --out ended in an internal error from highdicom. The results are
    written, that attribute empty (type 2)."""
    pydicom = pytest.importorskip("pydicom")
    from click.testing import CliRunner

    from edgemed.cli import main

    from .conftest import DICOM

    result = CliRunner().invoke(main, ["predict", str(cnn_bundle), str(DICOM / "ExplVR_BigEnd.dcm"), "--out",
                                       str(tmp_path / "out")])
    assert result.exit_code == 0, result.output  # was the internal error (3)
    written = sorted(p.name for p in (tmp_path / "out").glob("*.dcm"))
    assert written == ["ExplVR_BigEnd.sc.dcm", "ExplVR_BigEnd.sr.dcm"], result.output
    for name in written:
        ds = pydicom.dcmread(tmp_path / "out" / name)
        # the time emptied; the dotted date is one pydicom's DA reads (ACR-NEMA's form), so it is kept
        assert ds.get("StudyTime") in (None, "") and ds.StudyDate == "1997.04.24" and ds.StudyInstanceUID


def test_a_dicom_whose_modality_has_an_unknown_vr_is_an_input_error(tmp_path):
    """The coverage-guided fuzz (tests/fuzz/test_fuzz_atheris.py) made (0008,0060) Modality's VR bytes 'C2': pydicom
    parses elements lazily, so reading the modality to refuse result objects raised NotImplementedError ('Unknown
    Value Representation') from inside pydicom. Rebuilt here on a synthetic image: the same bytes, one line."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from edgemed.io.dicom import read_dicom

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 8, 8, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(64)
    path = tmp_path / "modality_vr.dcm"
    ds.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    at = raw.index(b"\x08\x00\x60\x00CS")  # (0008,0060) then its VR, CS
    path.write_bytes(raw[:at + 4] + b"C2" + raw[at + 6:])
    with pytest.raises(InputError, match="not a readable DICOM file.*Unknown Value Representation") as err:
        read_dicom(path)
    assert "\n" not in str(err.value)
