"""Decision margins: how far each FP32 case is from changing its call (top-1 class, or lesion present), which the
gate's flip-rate estimate rests on, and the lesion geometry behind segmentation's call.

Lesion-level agreement: per case, is there a lesion (a connected component of at least ``LESION_MIN_FRACTION`` of
the image) in the FP32 mask, and is there one in the candidate's? A lesion that appears or vanishes changes what a
clinician does; a boundary pixel does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LESION_MIN_FRACTION = 0.001  # components smaller than 0.1% of the image (16 px at 128x128) are speckle


def decision_scores(outputs: np.ndarray, kind: str) -> np.ndarray:
    """(N, C>=2) scores whose argmax is the class: logits as they are (a single logit l as [0, l]),
    probabilities as they are (a single p as [1-p, p])."""
    x = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
    if x.shape[1] == 1:
        return np.concatenate([1.0 - x, x], axis=1) if kind == "probabilities" else np.concatenate(
            [np.zeros_like(x), x], axis=1)
    return x


def margin_shifts(reference: np.ndarray, candidate: np.ndarray, kind: str) -> np.ndarray:
    """Candidate margin minus FP32 margin, both for FP32's top class: negative beyond -margin means a flip."""
    ref, cand = decision_scores(reference, kind), decision_scores(candidate, kind)
    top = ref.argmax(axis=1)
    rows = np.arange(len(ref))

    def margin_for_top(s: np.ndarray) -> np.ndarray:
        others = s.copy()
        others[rows, top] = -np.inf
        return s[rows, top] - others.max(axis=1)

    return margin_for_top(cand) - margin_for_top(ref)


def foreground_margin(output: np.ndarray, kind: str) -> np.ndarray:
    """(H, W) map whose sign is the lesion call: any foreground class beats background where it is > 0."""
    maps = np.asarray(output, np.float32)
    maps = maps[0] if maps.ndim == 4 else maps
    if maps.shape[0] == 1:
        return 2.0 * maps[0] - 1.0 if kind == "probabilities" else maps[0]
    return maps[1:].max(axis=0) - maps[0]


def min_lesion_px(shape: tuple[int, ...]) -> int:
    """The smallest component that counts as a lesion in a map of that shape."""
    return max(4, int(round(LESION_MIN_FRACTION * shape[-1] * shape[-2])))


def without_specks(labels: np.ndarray, cls: int, min_px: int) -> np.ndarray:
    """The class's mask (0/1) without connected components smaller than ``min_px``."""
    from scipy import ndimage

    found, count = ndimage.label(labels == cls)
    if count == 0:
        return np.zeros(labels.shape, np.uint8)
    sizes = np.bincount(found.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[found].astype(np.uint8)


def has_lesion(margin: np.ndarray, min_px: int) -> bool:
    from scipy import ndimage

    labels, count = ndimage.label(margin > 0)
    return count > 0 and int(np.bincount(labels.ravel())[1:].max()) >= min_px


def presence_margin(margin: np.ndarray, min_px: int, steps: int = 14) -> float:
    """How far (in margin units, uniformly over the image) the lesion call is from changing: the smallest
    shift t with has_lesion(margin - t) != has_lesion(margin) (sign by direction, bisected).

    A candidate whose margin map differs from FP32's by less than this everywhere makes the same call,
    because adding at most eps to every pixel can only grow components and subtracting can only shrink
    them: a certificate per case, which the gate turns into a flip-rate bound."""
    present = has_lesion(margin, min_px)
    lo, hi = 0.0, float(np.abs(margin).max()) + 1e-6
    for _ in range(steps):
        mid = (lo + hi) / 2
        shifted = margin - mid if present else margin + mid
        lo, hi = (lo, mid) if has_lesion(shifted, min_px) != present else (mid, hi)
    return lo


@dataclass(frozen=True)
class Margins:
    """FP32 decision margins (>= 0) of cases, and the stratum of each: FP32's class, or whether FP32 found a
    lesion. The gate estimates flip rates per stratum, so flips concentrated in one class are not averaged
    away by the others (a real INT8 classifier flipped 3.9% of one class while keeping 99.55% overall)."""

    values: np.ndarray
    strata: np.ndarray

    def __len__(self) -> int:
        return int(self.values.size)

    def of(self, stratum: int) -> np.ndarray:
        return self.values[self.strata == stratum]

    @classmethod
    def join(cls, parts: list[Margins]) -> Margins:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls(np.zeros(0), np.zeros(0, np.int64))
        return cls(np.concatenate([p.values for p in parts]), np.concatenate([p.strata for p in parts]))

    def spaced(self, most: int) -> Margins:
        """At most ``most`` of them, evenly spaced (deterministic)."""
        if len(self) <= most:
            return self
        idx = np.linspace(0, len(self) - 1, most).round().astype(int)
        return Margins(self.values[idx], self.strata[idx])


MAX_POPULATION = 2000  # FP32 margins the flip-rate estimate draws on (evenly spaced when there are more)


def spaced_population(population: dict[str, Margins]) -> dict[str, Margins]:
    """The population the gate's flip-rate estimate is taken over, at most MAX_POPULATION margins per metric, evenly
    spaced: convert, certify and bench alike (bench on all 49,661 DS2 beats built a 19.7 GB matrix without it)."""
    return {name: m.spaced(MAX_POPULATION) for name, m in population.items()}
