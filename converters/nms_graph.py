"""Non-maximum suppression appended to a detector's ONNX graph (``--nms graph``).

From raw candidates (edgemed's layout: boxes (1, K, 4) and scores (1, K, C); YOLO's: one
(1, 4 + C, K) tensor of cx, cy, w, h and class scores) to detections: ONNX ``NonMaxSuppression``
(class-aware, with the bundle's IoU and score thresholds), the selected boxes, scores and classes
gathered, and the best ``max_detections`` kept by ``TopK``. ONNX Runtime and OpenVINO both run
these ops, so the whole detector is one engine call. Outputs are per image (batch 1):
``det_boxes`` (S, 4) xyxy, ``det_scores`` (S,), ``det_classes`` (S,) int64; S may be 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemed.manifest import DetectionPost

NMS_OUTPUTS = {"boxes": "det_boxes", "scores": "det_scores", "classes": "det_classes"}


def append_nms(model_path: Path, raw: DetectionPost, out_path: Path) -> dict[str, str]:
    """Write ``out_path``: the model with NMS after its raw outputs; returns role -> output name."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(model_path))
    graph = model.graph
    nodes, inits = [], []

    def const(name: str, value, dtype=None) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), f"nms/{name}"))
        return f"nms/{name}"

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [f"nms/{name}"], name=f"nms/{name}", **attrs))
        return f"nms/{name}"

    if raw.layout == "edgemed":
        boxes = raw.outputs["boxes"]
        scores = node("Transpose", [raw.outputs["scores"]], "scores_t", perm=[0, 2, 1])  # (1, C, K)
    else:  # yolo
        out = raw.outputs["raw"]
        cxcywh = node("Slice", [out, const("s0", [0], np.int64), const("s4", [4], np.int64),
                                const("ax1", [1], np.int64)], "cxcywh")
        centres = node("Transpose", [cxcywh], "centres", perm=[0, 2, 1])  # (1, K, 4)
        from edgemed.detection_post import CXCYWH_TO_XYXY

        boxes = node("MatMul", [centres, const("to_xyxy", CXCYWH_TO_XYXY, np.float32)], "boxes_xyxy")
        scores = node("Slice", [out, const("s4b", [4], np.int64), const("end", [np.iinfo(np.int64).max], np.int64),
                                const("ax1b", [1], np.int64)], "scores_t")
    selected = node("NonMaxSuppression", [boxes, scores, const("max_out", [raw.max_detections], np.int64),
                                          const("iou", [raw.iou_threshold], np.float32),
                                          const("score", [raw.score_threshold], np.float32)], "selected")
    classes = node("Gather", [selected, const("col1", 1, np.int64)], "classes_all", axis=1)
    index = node("Gather", [selected, const("col2", 2, np.int64)], "index", axis=1)
    boxes0 = node("Squeeze", [boxes, const("ax0", [0], np.int64)], "boxes0")
    picked = node("Gather", [boxes0, index], "boxes_all", axis=0)
    scores0 = node("Squeeze", [scores, const("ax0b", [0], np.int64)], "scores0")
    pairs = node("Slice", [selected, const("p1", [1], np.int64), const("p3", [3], np.int64),
                           const("ax1c", [1], np.int64)], "pairs")
    found = node("GatherND", [scores0, pairs], "scores_all")
    count = node("Shape", [found], "count")
    k = node("Min", [count, const("cap", [raw.max_detections], np.int64)], "k")
    nodes.append(helper.make_node("TopK", [found, k], [NMS_OUTPUTS["scores"], "nms/order"], name="nms/topk",
                                  axis=0, largest=1, sorted=1))
    nodes.append(helper.make_node("Gather", [picked, "nms/order"], [NMS_OUTPUTS["boxes"]], name="nms/boxes", axis=0))
    nodes.append(helper.make_node("Gather", [classes, "nms/order"], [NMS_OUTPUTS["classes"]], name="nms/classes",
                                  axis=0))
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    del graph.output[:]
    graph.output.extend([
        helper.make_tensor_value_info(NMS_OUTPUTS["boxes"], TensorProto.FLOAT, ["detections", 4]),
        helper.make_tensor_value_info(NMS_OUTPUTS["scores"], TensorProto.FLOAT, ["detections"]),
        helper.make_tensor_value_info(NMS_OUTPUTS["classes"], TensorProto.INT64, ["detections"]),
    ])
    onnx.checker.check_model(model)
    onnx.save_model(model, str(out_path), save_as_external_data=False)
    return dict(NMS_OUTPUTS)
