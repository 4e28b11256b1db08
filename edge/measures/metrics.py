"""Task metrics used by the drift gate and the benchmarks (plain numpy, no framework)."""

from __future__ import annotations

import numpy as np


def dice(a: np.ndarray, b: np.ndarray, cls: int) -> float:
    """Dice of class ``cls`` between two label maps pooled over all pixels; both empty is 1."""
    pa, pb = a == cls, b == cls
    denom = int(pa.sum()) + int(pb.sum())
    return 1.0 if denom == 0 else 2.0 * int((pa & pb).sum()) / denom


def iou(a: np.ndarray, b: np.ndarray, cls: int) -> float:
    pa, pb = a == cls, b == cls
    union = int((pa | pb).sum())
    return 1.0 if union == 0 else int((pa & pb).sum()) / union


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of cases whose top-1 class agrees."""
    a, b = np.asarray(a), np.asarray(b)
    return float((a == b).mean()) if a.size else 1.0


def confusion(truth: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(truth, int), np.asarray(pred, int)), 1)
    return m


def auroc(truth_binary: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); None when one class is absent."""
    t = np.asarray(truth_binary, bool)
    s = np.asarray(scores, np.float64)
    pos, neg = s[t], s[~t]
    if not pos.size or not neg.size:
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(order.size, np.float64)
    values = np.concatenate([pos, neg])[order]
    i = 0
    while i < values.size:  # average ranks over ties
        j = i
        while j + 1 < values.size and values[j + 1] == values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def _proportion(hits: int, n: int) -> dict:
    """A proportion with its case count and one-sided 95% Clopper-Pearson bounds."""
    from .stats import clopper_pearson

    lo, hi = clopper_pearson(hits, n)
    return {"value": hits / n if n else None, "cases": int(n), "low": lo, "high": hi}


def classification_report(truth: np.ndarray, probabilities: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, per-class sensitivity/specificity/F1 and one-vs-rest AUROC against ground truth; each
    proportion also with its case count and 95% bounds (``*_interval``)."""
    truth = np.asarray(truth, int)
    pred = np.argmax(probabilities, axis=1)
    k = probabilities.shape[1]
    m = confusion(truth, pred, k)
    per_class = {}
    for c in range(k):
        tp, fn = m[c, c], m[c].sum() - m[c, c]
        fp, tn = m[:, c].sum() - m[c, c], m.sum() - m[c].sum() - m[:, c].sum() + m[c, c]
        sens = tp / (tp + fn) if tp + fn else None
        spec = tn / (tn + fp) if tn + fp else None
        prec = tp / (tp + fp) if tp + fp else None
        f1 = 2 * prec * sens / (prec + sens) if prec and sens else 0.0
        per_class[labels[c] if c < len(labels) else str(c)] = {
            "sensitivity": None if sens is None else float(sens), "specificity": None if spec is None else float(spec),
            "sensitivity_interval": _proportion(int(tp), int(tp + fn)),
            "ppv": None if prec is None else float(prec), "ppv_interval": _proportion(int(tp), int(tp + fp)),
            "specificity_interval": _proportion(int(tn), int(tn + fp)),
            "f1": float(f1), "auroc": auroc(truth == c, probabilities[:, c]), "support": int(m[c].sum()),
        }
    correct = int((pred == truth).sum())
    return {"cases": int(truth.size), "accuracy": float((pred == truth).mean()),
            "accuracy_interval": _proportion(correct, int(truth.size)), "per_class": per_class,
            "confusion": m.tolist()}


def hd95(a: np.ndarray, b: np.ndarray, cls: int = 1) -> float | None:
    """95th-percentile symmetric Hausdorff distance (pixels) between class boundaries; None if either is empty."""
    from scipy import ndimage

    pa, pb = a == cls, b == cls
    if not pa.any() or not pb.any():
        return None
    edge_a = pa ^ ndimage.binary_erosion(pa)
    edge_b = pb ^ ndimage.binary_erosion(pb)
    dist_to_b = ndimage.distance_transform_edt(~edge_b)
    dist_to_a = ndimage.distance_transform_edt(~edge_a)
    return float(np.percentile(np.concatenate([dist_to_b[edge_a], dist_to_a[edge_b]]), 95))


def segmentation_report(truths: list[np.ndarray], preds: list[np.ndarray], labels: list[str]) -> dict:
    """Per foreground class: mean per-image Dice and IoU (empty/empty = 1) and mean HD95 where defined."""
    out = {}
    for c in range(1, max(2, len(labels))):
        dices = [dice(p, t, c) for p, t in zip(preds, truths)]
        ious = [iou(p, t, c) for p, t in zip(preds, truths)]
        try:
            hds = [h for h in (hd95(p, t, c) for p, t in zip(preds, truths)) if h is not None]
            hd = float(np.mean(hds)) if hds else None
        except ImportError:
            hd = "not available (scipy not installed)"
        from .stats import bootstrap_mean

        lo, hi = bootstrap_mean(dices)
        out[labels[c] if c < len(labels) else str(c)] = {
            "dice": float(np.mean(dices)), "iou": float(np.mean(ious)), "hd95_px": hd,
            "dice_interval": {"value": float(np.mean(dices)), "cases": len(dices), "low": lo, "high": hi}}
    return {"cases": len(preds), "per_class": out}
