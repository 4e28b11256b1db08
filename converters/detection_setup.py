"""Reading a detector's outputs: which layout they follow, which output is which, how many classes.

Three layouts are understood, declared with ``--detection-layout`` (or recognised from the outputs)
and checked against the model, with a one-line error when they do not fit:

- ``edgemed``: two outputs, boxes (N, K, 4) x1 y1 x2 y2 and scores (N, K, C), before NMS (edgemed's zoo);
- ``yolo``: one output (N, 4 + C, K): cx, cy, w, h and C class scores, before NMS (Ultralytics' export);
- ``torchvision``: boxes (K, 4), labels (K,) and scores (K,) after the model's own NMS (Faster R-CNN,
  RetinaNet, SSD, FCOS exported by ``torch.onnx``); torchvision's labels count background as 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgemed.errors import OptionError
from edgemed.manifest import DetectionPost

LAYOUTS = ("edgemed", "yolo", "torchvision")


def _outputs(onnx_path: Path) -> list[tuple[str, tuple, str]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return [(o.name, tuple(o.shape), o.type) for o in session.get_outputs()]


def _static(d) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


def read_layout(onnx_path: Path, layout: str | None, labels: tuple[str, ...] | None) -> tuple[str, dict, list[str]]:
    """(layout, role -> output name, class names), checked against the model's outputs."""
    outs = _outputs(onnx_path)
    shapes = ", ".join(f"{n} {list(s)}" for n, s, _ in outs)
    if layout is None:
        layout = {1: "yolo", 2: "edgemed", 3: "torchvision"}.get(len(outs))
        if layout is None:
            raise OptionError(f"cannot tell the detection layout from {len(outs)} outputs ({shapes})",
                              f"pass --detection-layout, one of {', '.join(LAYOUTS)}")
    if layout == "edgemed":
        roles, classes = _edgemed(outs, shapes)
    elif layout == "yolo":
        roles, classes = _yolo(outs, shapes)
    else:
        roles, classes = _torchvision(outs, shapes), None
    return layout, roles, _labels(layout, classes, labels)


def _edgemed(outs: list, shapes: str) -> tuple[dict, int | None]:
    boxes = [o for o in outs if len(o[1]) == 3 and o[1][-1] == 4]
    if len(outs) != 2 or len(boxes) != 1 or any(len(o[1]) != 3 for o in outs):
        raise OptionError(f"the model's outputs ({shapes}) are not edgemed's detection layout: boxes (N, K, 4) and "
                          "scores (N, K, C)", "pass the --detection-layout the model follows (yolo, torchvision)")
    scores = next(o for o in outs if o is not boxes[0])
    return {"boxes": boxes[0][0], "scores": scores[0]}, _static(scores[1][-1])


def _yolo(outs: list, shapes: str) -> tuple[dict, int | None]:
    if len(outs) != 1 or len(outs[0][1]) != 3:
        raise OptionError(f"the model's outputs ({shapes}) are not YOLO's layout: one (N, 4 + C, K) tensor",
                          "pass the --detection-layout the model follows (edgemed, torchvision)")
    rows = _static(outs[0][1][1])
    if rows is not None and rows < 5:
        raise OptionError(f"YOLO-layout output {outs[0][0]} has {rows} rows, fewer than 4 box rows and a class",
                          "check the model's export (Ultralytics: format='onnx', nms=False)")
    return {"raw": outs[0][0]}, None if rows is None else rows - 4


def _torchvision(outs: list, shapes: str) -> dict:
    by_kind = {}
    for name, shape, kind in outs:
        if len(shape) == 2 and shape[-1] == 4:
            by_kind["boxes"] = name
        elif len(shape) == 1 and "int" in kind:
            by_kind["labels"] = name
        elif len(shape) == 1 and "float" in kind:
            by_kind["scores"] = name
    if len(outs) != 3 or len(by_kind) != 3:
        raise OptionError(f"the model's outputs ({shapes}) are not torchvision's detection layout: boxes (K, 4), "
                          "labels (K,) int64, scores (K,)", "pass the --detection-layout the model follows")
    return by_kind


def _labels(layout: str, classes: int | None, labels: tuple[str, ...] | None) -> list[str]:
    if labels is None:
        if classes is None:
            raise OptionError(f"a {layout}-layout detector does not say how many classes it has",
                              "name them with --labels, e.g. --labels lesion")
        return ["lesion"] if classes == 1 else [f"class{i}" for i in range(classes)]
    if classes is not None and len(labels) != classes:
        raise OptionError(f"--labels names {len(labels)} classes but the {layout}-layout outputs hold {classes}",
                          f"give {classes} names")
    return list(labels)


def raw_post(layout: str, roles: dict, score: float, iou: float, most: int) -> DetectionPost:
    """The postprocess of the model as exported: host NMS on raw candidates, or torchvision's own NMS."""
    return DetectionPost(layout=layout, nms="graph" if layout == "torchvision" else "host", score_threshold=score,
                         iou_threshold=iou, max_detections=most, outputs=roles,
                         label_offset=1 if layout == "torchvision" else 0)


@dataclass(frozen=True)
class DetectorSetup:
    """A detector as convert handles it: how the source's outputs decode (the reference, host NMS on the
    raw candidates), how the bundle's do (after the NMS appended to the graph, or the same), its classes,
    and the ONNX the reference evaluator runs (the graph before any NMS was appended)."""

    raw: DetectionPost
    post: DetectionPost
    labels: list[str]
    raw_onnx: Path
    source_outputs: list[str]


def setup(onnx_path: Path, opts, scratch: Path, log) -> DetectorSetup:
    """Read the exported detector's layout and, with ``--nms graph``, append NMS to ``onnx_path`` in place."""
    import shutil

    from .nms_graph import append_nms

    layout, roles, labels = read_layout(onnx_path, opts.detection_layout, opts.labels)
    names = [n for n, _, _ in _outputs(onnx_path)]
    raw = raw_post(layout, roles, opts.score_threshold, opts.iou_threshold, opts.max_detections)
    raw_onnx = scratch / "detector_raw.onnx"
    shutil.copyfile(onnx_path, raw_onnx)
    if layout == "torchvision":
        log(f"detector: torchvision layout ({', '.join(f'{k}={v}' for k, v in roles.items())}); the model runs its "
            "own NMS")
        return DetectorSetup(raw, raw, labels, raw_onnx, names)
    if opts.nms != "graph":  # host NMS unless asked for: measured faster (edgemed.converters.options, nms)
        log(f"detector: {layout} layout, NMS on the host after the engine")
        return DetectorSetup(raw, raw, labels, raw_onnx, names)
    staged = scratch / "detector_nms.onnx"
    outputs = append_nms(onnx_path, raw, staged)
    shutil.copyfile(staged, onnx_path)
    log(f"detector: {layout} layout, NMS appended to the graph (IoU {raw.iou_threshold}, score > "
        f"{raw.score_threshold}, at most {raw.max_detections} boxes)")
    post = DetectionPost(layout=layout, nms="graph", score_threshold=raw.score_threshold,
                         iou_threshold=raw.iou_threshold, max_detections=raw.max_detections, outputs=outputs)
    return DetectorSetup(raw, post, labels, raw_onnx, names)


def torch_output_names(count: int) -> list[str]:
    """Names for a PyTorch detector's outputs at export: boxes and scores (edgemed's layout), or one raw tensor."""
    if count == 2:
        return ["boxes", "scores"]
    if count == 1:
        return ["raw"]
    raise OptionError(f"the detector returns {count} outputs; edgemed reads two (boxes, scores) or one (YOLO's raw "
                      "tensor) from PyTorch", "export it to ONNX yourself (torchvision detectors: torch.onnx.export) "
                      "and convert the ONNX file")
