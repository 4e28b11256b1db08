"""A whole recording through the beat stream: real-time factor, compute per beat, and (where the record has
reference annotations) beat detection and classification against them.

``bench --record PATH`` runs it for signal bundles. The real-time factor is signal seconds per
second of compute (detector, preprocessing, inference, all of it), measured on this device; the
report delay is the stream's design bound (a beat is reported at most one block plus one margin
after it happened), not a measurement.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemed.measures.metrics import _proportion

# MIT-BIH beat symbols by AAMI EC57 class (the non-beat annotations, rhythm changes and noise, are not beats)
AAMI = {"N": "NLRej", "S": "AaJS", "V": "VE", "F": "F", "Q": "/fQ"}
MATCH_S = 0.15  # a detected beat within 150 ms of an annotated one is that beat (EC57's window)


def stream_record(pipe, path: Path) -> dict:
    from edgemed.beats import BLOCK_S, MARGIN_S

    record = pipe.beats(path)
    out = {
        "record": str(path), "duration_s": round(record.duration_s, 3), "beats": len(record.beats),
        "counts": record.counts(), "compute_s": round(record.compute_s, 4),
        "realtime_factor": round(record.realtime_factor, 1),
        "compute_per_beat_ms": round(1e3 * record.compute_s / max(1, len(record.beats)), 4),
        "report_delay_bound_s": BLOCK_S + MARGIN_S,
        "gaps": [{"start_s": g.start_s, "end_s": g.end_s, "reason": g.reason} for g in record.gaps],
        "warnings": record.warnings,
    }
    annotations = Path(path).with_suffix(".atr")
    if annotations.is_file():
        out["against_annotations"] = _against(pipe, record, annotations)
    return out


def _against(pipe, record, annotations: Path) -> dict:
    import wfdb

    ann = wfdb.rdann(str(annotations.with_suffix("")), "atr")
    fs = ann.fs or 360.0
    cls = {s: c for c, symbols in AAMI.items() for s in symbols}
    truth = [(int(s), cls[sym]) for s, sym in zip(ann.sample, ann.symbol) if sym in cls]
    if not truth:
        return {"annotated_beats": 0}
    t = np.array([s for s, _ in truth])
    found = np.array([b.sample for b in record.beats]) if record.beats else np.zeros(0, int)
    d = np.abs(t[:, None] - found[None, :]) if len(found) else np.full((len(t), 1), np.inf)
    nearest = d.argmin(axis=1)
    hit = d.min(axis=1) <= MATCH_S * fs
    used = set(nearest[hit].tolist())
    per_class = {}
    for name in pipe.labels:
        annotated = [i for i, (_, c) in enumerate(truth) if c == name]
        matched = [i for i in annotated if hit[i]]
        right = sum(record.beats[nearest[i]].label == name for i in matched)  # true positives, counted once
        called = sum(1 for j, b in enumerate(record.beats) if b.label == name and j in used)
        per_class[name] = {"sensitivity": _proportion(right, len(annotated)), "ppv": _proportion(right, called)}
    return {"annotated_beats": len(truth), "detected": _proportion(int(hit.sum()), len(truth)),
            "detections_matching_a_beat": _proportion(len(used), len(found)),
            "per_class": per_class,
            "note": "sensitivity counts every annotated beat (a missed detection is a miss); ppv among the "
                    "detected beats that match an annotation"}
