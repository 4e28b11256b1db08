"""Paths to what ships inside the package: small trained models and real sample images.

These make ``edgemed demo`` and the default benchmarks work on a fresh machine with no other
files. Sources and licences: ``assets/NOTICE.md``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from .input_kinds import input_kind
from .tasks import task_named

SHIPPED_MODELS = ("unet_busi", "cnn_breastmnist", "det_busi", "ecg_cnn", "ecg_lstm", "ecg_rr")


def assets_dir() -> Path:
    return Path(str(resources.files("edgemed") / "assets"))


def samples_dir(name: str) -> Path:
    """``busi`` (ultrasound frames), ``busi_masks`` (their lesion masks) or ``breastmnist``."""
    return assets_dir() / "samples" / name


def samples_for_task(task: str) -> Path:
    return samples_dir(task_named(task).shipped_samples)


def calibration_set(task: str, kind: str = "image") -> Path:
    """A small real calibration set (train-split images, or DS1 ECG beats) shipped so INT8 works out of the box."""
    return samples_dir(input_kind(kind).shipped_calibration or task_named(task).shipped_calibration)


def verdict_set(task: str, kind: str = "image") -> Path | None:
    """Held-out real cases the shipped models' verdicts are taken on, beside their calibration set: the other 540
    BUSI frames for the segmenter and detector, the DS2 beats for the ECG models. None for the classifier, whose
    verdict takes the BreastMNIST images calibration leaves over."""
    own = input_kind(kind)
    verdict = own.shipped_verdict if own.shipped_calibration else task_named(task).shipped_verdict
    return None if verdict is None else samples_dir(verdict)


def ecg_beats() -> Path:
    """8,446 labelled MIT-BIH DS2 beats (patients the shipped ECG models never saw; all S, V, F and 3,000 N):
    their verdict set."""
    return samples_dir("ecg") / "ds2_beats.npz"


def ecg_record() -> Path:
    """The first 10 minutes of MIT-BIH DS2 record 213 in WFDB form (with its beat annotations)."""
    return samples_dir("ecg") / "mitdb213_10min.hea"


def shipped_model(name: str) -> tuple[Path, dict]:
    """The state_dict file and the model card (arch, input shape, spec, training record)."""
    if name not in SHIPPED_MODELS:
        raise KeyError(name)
    card = json.loads((assets_dir() / f"{name}.json").read_text())
    return assets_dir() / f"{name}.pt", card


def card_features(card: dict) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """A shipped model card's inputs beside the main one, as convert's ``features`` takes them (``ecg_rr``'s RR
    intervals); () for one-input models."""
    return tuple((i["name"], tuple(i["features"])) for i in card.get("inputs", [])[1:])
