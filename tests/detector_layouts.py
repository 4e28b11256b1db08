"""The shipped detector in the two other output layouts edgemed reads, built from its real weights.

- YOLO (Ultralytics' ONNX export, ``nms=False``): one (N, 4 + C, K) tensor of box centre, size and
  class scores; built as a PyTorch wrapper, so convert exports it as it would a user's model.
- torchvision (Faster R-CNN & co. exported with ``torch.onnx``): boxes (K, 4), labels (K,) int64
  counting background as 0, scores (K,), after the model's own NMS. torchvision's NMS op does not
  load in this workplace, so the graph is the detector with ONNX NMS appended and its outputs
  renamed, reordered and relabelled to that contract; what convert reads is the same.
"""

from __future__ import annotations

from pathlib import Path

import torch


class Yolo(torch.nn.Module):
    """A detector in edgemed's layout, its outputs rewritten as YOLO's one (N, 4 + C, K) tensor."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.input_multiple = inner.input_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        boxes, scores = self.inner(x)
        centre = (boxes[..., :2] + boxes[..., 2:]) / 2
        size = boxes[..., 2:] - boxes[..., :2]
        return torch.cat([centre, size, scores], dim=-1).permute(0, 2, 1)


def yolo_module() -> Yolo:
    from edgemed.samples import shipped_model
    from edgemed.zoo import build

    weights, card = shipped_model("det_busi")
    inner = build(card["arch"], **card["arch_args"])
    inner.load_state_dict(torch.load(weights, weights_only=True))
    return Yolo(inner.eval()).eval()


def torchvision_onnx(edgemed_onnx: Path, out: Path, score: float = 0.05, iou: float = 0.5, most: int = 100) -> Path:
    """An ONNX detector with torchvision's output contract, from an edgemed-layout ONNX file."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgemed.converters.detection_setup import raw_post, read_layout
    from edgemed.converters.nms_graph import append_nms

    layout, roles, _ = read_layout(edgemed_onnx, "edgemed", ("lesion",))
    staged = out.with_suffix(".nms.onnx")
    names = append_nms(edgemed_onnx, raw_post(layout, roles, score, iou, most), staged)
    model = onnx.load(str(staged))
    staged.unlink()
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(__import__("numpy").array(1, "int64"), "tv/one"))
    graph.node.extend([
        helper.make_node("Identity", [names["boxes"]], ["boxes"], name="tv/boxes"),
        helper.make_node("Add", [names["classes"], "tv/one"], ["labels"], name="tv/labels"),
        helper.make_node("Identity", [names["scores"]], ["scores"], name="tv/scores"),
    ])
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["K", 4]),
                         helper.make_tensor_value_info("labels", TensorProto.INT64, ["K"]),
                         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["K"])])
    onnx.checker.check_model(model)
    onnx.save_model(model, str(out))
    return out
