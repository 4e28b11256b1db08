"""Write the ECG signal sets edgemed ships (and the full DS2 set bench reads), from MIT-BIH in ../shared/data.

- ``calibration/ecg_ds1.npz``: 1,000 DS1 (training-patient) beats, classes N/S/V/F stratified, for
  INT8 calibration and the fallback's tuning.
- ``ecg/ds2_beats.npz``: 8,446 DS2 (held-out patients) beats with labels: every S, V and F beat of DS2
  and 3,000 of its N beats, the verdict set of the shipped ECG models. The per-class gate needs a
  few hundred beats FP32 calls each class (299 with no flip certify 99%): 4,000 stratified beats left
  the rarest class at 233 and every artifact uncertified.
- ``ecg/mitdb213_10min.{hea,dat,atr}``: the first 10 minutes of DS2 record 213 (V and F beats),
  re-written by ``wfdb`` in the original format 212, for the demo's continuous stream.
- with ``--full OUT.npz``: every N/S/V/F beat of DS2 in the same format (not shipped: bench data).

Q beats (15 in all) are left out: too rare to learn or grade. Windows stay in ADC counts
(``adc_gain`` 200 per mV, from the records' headers), so nothing is rounded twice. Each beat carries its RR
intervals (``features``, named by ``feature_names``: edgemed.rr_intervals, from every annotated beat of its record),
which the two-input ``ecg_rr`` model reads beside the window; NaN for a record's first and last beat.

    python scripts/make_ecg_sets.py --data ../shared/data --out edge/assets/samples [--full /tmp/ds2_all.npz]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgemed.rr_intervals import RR_FEATURES, rr_features

CLASSES = ["N", "S", "V", "F"]
FS = 120.0
GAIN = 200.0


def _stratified(y: np.ndarray, want: dict[int, int], rng: np.random.Generator) -> np.ndarray:
    idx = []
    for c, n in want.items():
        pool = np.flatnonzero(y == c)
        idx.append(rng.choice(pool, size=min(n, len(pool)), replace=False))
    return np.sort(np.concatenate(idx))


def _save(path: Path, x: np.ndarray, y: np.ndarray, record: np.ndarray, meta: str, rr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, signals=x.astype(np.int16), fs=FS, units="mV", adc_gain=GAIN, leads=np.array(["MLII"]),
                        labels=y.astype(np.int8), classes=np.array(CLASSES), record=record.astype(np.int16),
                        source=meta, features=rr.astype(np.float32), feature_names=np.array(RR_FEATURES))
    print(f"{path}: {len(x)} beats, per class {np.bincount(y, minlength=4).tolist()}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("edge/assets/samples"))
    ap.add_argument("--full", type=Path)
    args = ap.parse_args()
    d = np.load(args.data / "mitbih" / "mitdb_beats_ds1ds2.npz")
    x, y, split, record = d["x"], d["y"].astype(np.int64), d["split"], d["record"]
    rr = rr_features(record, d["r_peak"])  # from every annotated beat (Q too); NaN for a record's first and last
    keep = y < 4  # drop Q
    source = "MIT-BIH Arrhythmia Database v1.0.0 (PhysioNet, ODC-By 1.0), lead MLII, 1.5 s at 120 Hz"
    rng = np.random.default_rng(0)
    ds1 = np.flatnonzero(keep & (split == 0))
    pick = ds1[_stratified(y[ds1], {0: 400, 1: 200, 2: 250, 3: 150}, rng)]
    _save(args.out / "calibration" / "ecg_ds1.npz", x[pick], y[pick], record[pick], source + ", DS1", rr[pick])
    ds2 = np.flatnonzero(keep & (split == 1))
    pick = ds2[_stratified(y[ds2], {0: 3000, 1: 1837, 2: 3221, 3: 388}, rng)]
    _save(args.out / "ecg" / "ds2_beats.npz", x[pick], y[pick], record[pick], source + ", DS2", rr[pick])
    if args.full:
        _save(args.full, x[ds2], y[ds2], record[ds2], source + ", DS2 (all N/S/V/F beats)", rr[ds2])
    _excerpt(args.data / "mitbih" / "records" / "213", args.out / "ecg", minutes=10)


def _excerpt(record: Path, out: Path, minutes: int) -> None:
    import wfdb

    rec = wfdb.rdrecord(str(record), physical=False)
    ann = wfdb.rdann(str(record), "atr")
    stop = int(minutes * 60 * rec.fs)
    keep = ann.sample < stop
    name = f"mitdb{record.name}_{minutes}min"
    with tempfile.TemporaryDirectory() as tmp:
        wfdb.wrsamp(name, fs=rec.fs, units=rec.units, sig_name=rec.sig_name, d_signal=rec.d_signal[:stop],
                    fmt=rec.fmt, adc_gain=rec.adc_gain, baseline=rec.baseline, write_dir=tmp,
                    comments=[f"first {minutes} min of MIT-BIH record {record.name} (PhysioNet, ODC-By 1.0)"])
        wfdb.wrann(name, "atr", ann.sample[keep], np.array(ann.symbol)[keep].tolist(), write_dir=tmp,
                   aux_note=np.array(ann.aux_note)[keep].tolist())
        out.mkdir(parents=True, exist_ok=True)
        for f in Path(tmp).iterdir():
            shutil.copy(f, out / f.name)
    print(f"{out / name}: {minutes} min, {int(keep.sum())} annotations")


if __name__ == "__main__":
    main()
