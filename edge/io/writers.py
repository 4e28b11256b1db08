"""Writing what ``predict --out`` produces: per frame, its result as JSON and, for masks, the mask and an
overlay; for detections, the frame with its boxes drawn; for classifiers converted with ``--explain``, the
saliency heat map over the frame.

Every file is written atomically and named from the frame's unique stem (:mod:`edgemed.io.inputs`),
so no result overwrites another within a run.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_atomic
from .inputs import Frame
from .overlay import write_detections, write_segmentation


def write_result(out_dir: Path, frame: Frame, result, record: dict) -> list[Path]:
    """The files for one frame's result; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if getattr(result, "mask", None) is not None:
        written += write_segmentation(out_dir, frame.stem, frame.image, result.mask)
    elif getattr(result, "boxes", None) is not None:
        written += write_detections(out_dir, frame.stem, frame.image, result)
    elif getattr(result, "saliency", None) is not None:  # a bundle converted with --explain
        from .saliency_overlay import write_saliency

        written += write_saliency(out_dir, frame.stem, frame.image, result.saliency)
    path = out_dir / f"{frame.stem}.json"
    write_atomic(path, json.dumps({**record, "written": [str(p) for p in written + [path]]}, indent=2) + "\n")
    return written + [path]
