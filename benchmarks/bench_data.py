"""What ``edgemed bench`` measures on, and what it may grade against: never someone else's data.

- ``--data``: all of it (``--limit N`` asks for fewer, evenly spaced, and the report says so), with
  ``--labels`` or the labels inside the data's own .npz.
- No ``--data``: the bundle's own held-out verdict images, found where conversion read them and
  checked by hash; if they are gone, the sample frames stored in the bundle. Unlabelled: drift and
  latency only. Only a bundle made from one of edgemed's shipped models (recorded by the weights'
  hash) is graded on the shipped labelled samples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemed.bundle import Bundle
from edgemed.datasets import ImageSet, load_labels
from edgemed.input_kinds import input_kind
from edgemed.samples import samples_dir, samples_for_task
from edgemed.tasks import task_named

SAMPLES = "samples.npz"


@dataclass
class BenchData:
    images: ImageSet
    frames: list[np.ndarray]
    truth: list | None
    source: str  # one line: where the images came from and why
    available: int  # images in the source, before --limit


def bench_data(b: Bundle, data: Path | None, labels: Path | None, limit: int | None,
               data_key: str | None = None, shipped_samples: bool = True) -> BenchData:
    """``shipped_samples=False``: never the shipped labelled samples, although ``b`` is a shipped model (an ensemble
    in which another member is not: the user's model is not graded on edgemed's data)."""
    if data is not None:
        everything = ImageSet.open(data, key=data_key)
        limited = everything.subset(limit)
        images, dropped = _featured(b, limited)
        truth = load_labels(labels, images, b.task, b.labels)
        note = f" (--limit: {len(limited)} of {len(everything)}, evenly spaced)" \
            if len(limited) < len(everything) else ""
        return BenchData(images, [im for _, im in images], truth, f"{data}{note}{dropped}", len(everything))
    beats = input_kind(b.manifest.model.input_kind).shipped_verdict  # signals: the labelled DS2 beats
    if shipped_samples and b.manifest.model.shipped is not None and beats is not None:
        everything = ImageSet.open(samples_dir(beats))
        images, note = _featured(b, everything)
        truth = load_labels(labels or samples_dir(beats), images, b.task, b.labels)
        return BenchData(images, [im for _, im in images], truth,
                         f"edgemed's labelled MIT-BIH DS2 beats for its shipped {b.manifest.model.shipped} (stratified "
                         f"by class: sensitivities hold, PPV does not; pass --data for all of DS2){note}",
                         len(everything))
    if shipped_samples and b.manifest.model.shipped is not None:
        images = ImageSet.open(samples_for_task(b.task))
        truth = load_labels(labels or samples_dir(task_named(b.task).shipped_truth), images, b.task, b.labels)
        return BenchData(images, [im for _, im in images], truth,
                         f"edgemed's labelled samples for its shipped {b.manifest.model.shipped}", len(images))
    images, source = _verdict_images(b)
    images = images.subset(limit)
    return BenchData(images, [im for _, im in images], None, source, len(images))


def _featured(b: Bundle, images: ImageSet) -> tuple[ImageSet, str]:
    """For a model with inputs beside the beat, the windows whose features it reads are defined, and a note of how
    many were left out (a record's first and last beat have no RR intervals)."""
    if not b.manifest.features:
        return images, ""
    kept, dropped = images.with_features([f for spec in b.manifest.features for f in spec.features])
    return kept, f"; {dropped} window(s) without defined {', '.join(s.name for s in b.manifest.features)} left out" \
        if dropped else ""


def _verdict_images(b: Bundle) -> tuple[ImageSet, str]:
    """The images the bundle's verdict was taken on, if they are still where conversion read them and
    unchanged; else the sample frames the bundle carries."""
    prov = b.manifest.provenance
    names = b.report().get("data", {}).get("verdict_names")
    if prov.evaluation_source and names:
        key = re.match(r"^(\w+)\[\d+\]$", names[0])
        try:
            found = ImageSet.open(prov.evaluation_source, key=key.group(1) if key else None).select_names(names)
        except Exception:  # noqa: BLE001 - moved, unreadable or changed: fall back to the stored frames
            found = None
        if found is not None and found.sha256() == prov.evaluation_sha256:
            return found, (f"the bundle's {len(found)} held-out verdict {found.unit} ({prov.evaluation_source}, "
                           "hash checked)")
    stored = ImageSet.open(b.file(SAMPLES))
    return stored, (f"the {len(stored)} held-out {'frames' if stored.unit == 'images' else stored.unit} stored in the "
                    f"bundle (the verdict {stored.unit} at {prov.evaluation_source} were not found unchanged)")
