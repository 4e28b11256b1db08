"""The pre- and post-processing steps of a native Triton export, in numpy alone.

A stock Triton image runs Python-backend models with numpy and nothing else: no Pillow, no msgspec, no
edgemed. ``export triton --backend onnxruntime|openvino`` therefore writes this file, verbatim, beside
the ``model.py`` of the ensemble's two Python steps, and the steps call it around the native engine.
It must import nothing but numpy and the standard library (a test runs it in an interpreter that has
only numpy).

It is a second implementation of what :class:`edgemed.preprocess.Preprocessor` and
``Pipeline.finish`` do, for the ops a numpy-only step can compute exactly: Pillow's resampling (the
same separable filters, coefficients and 8-bit fixed-point rounding as Pillow's ``Resample.c``, so a
uint8 frame gives the same bytes) and Pillow's luma conversion, crops, the intensity ops and layouts;
on the way out class probabilities, the segmentation mask mapped back through the recorded geometry,
and detections mapped back, clipped and suppressed. The tests hold it to edgemed's own outputs on real
images, op by op and end to end; a spec with an op it cannot compute (``clahe``: scikit-image) is
refused at export, never approximated.

Geometry travels from the pre step to the post step as a float64 tensor, one row per resize or crop:
``[kind, src_h, src_w, dst_h, dst_w, a, b, c, d]`` (kind 1: resize, box top/left/height/width in a..d;
kind 2: crop, top/left in a, b), with the original frame's size in a first row of kind 0.
"""

from __future__ import annotations

import json
import math

import numpy as np

PORTABLE_OPS = ("to_gray", "to_rgb", "resize", "center_crop", "scale", "minmax", "window", "percentile_rescale",
                "gamma", "normalize")
GEOMETRY_ROWS = 8  # at most this many resize/crop steps after the size row (a spec has one or two)

# --- Pillow's resampling filters (support, kernel), as in its Resample.c ---------------------------------


def _box(x: np.ndarray) -> np.ndarray:
    return ((x > -0.5) & (x <= 0.5)).astype(np.float64)


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _sinc(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        px = x * math.pi
        return np.where(x == 0.0, 1.0, np.sin(px) / np.where(x == 0.0, 1.0, px))


def _lanczos(x: np.ndarray) -> np.ndarray:
    return np.where((x >= -3.0) & (x < 3.0), _sinc(x) * _sinc(x / 3.0), 0.0)


FILTERS = {"area": (0.5, _box), "bilinear": (1.0, _bilinear), "bicubic": (2.0, _bicubic), "lanczos": (3.0, _lanczos)}
PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed point for 8-bit images


def _coefficients(in_size: int, out_size: int, interpolation: str) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel: the first source pixel and the normalised weights (out_size, ksize), zeros beyond
    each pixel's own span, computed in the order and precision Pillow uses."""
    support, kernel = FILTERS[interpolation]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = support * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)  # C's (int) truncates; clamped to 0 after
    xmax = np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin
    x = np.arange(ksize)
    weights = kernel((x[None, :] + xmin[:, None] - center[:, None] + 0.5) * (1.0 / filterscale))
    weights = np.where(x[None, :] < xmax[:, None], weights, 0.0)
    total = np.zeros(out_size)
    for k in range(ksize):  # summed left to right, as the C loop does
        total += weights[:, k]
    weights = np.where(total[:, None] != 0.0, weights / np.where(total == 0.0, 1.0, total)[:, None], weights)
    return xmin, weights


def _resample_axis(a: np.ndarray, axis: int, out_size: int, interpolation: str, integer: bool) -> np.ndarray:
    xmin, weights = _coefficients(a.shape[axis], out_size, interpolation)
    ksize = weights.shape[1]
    src = np.moveaxis(a, axis, 0)
    index = np.minimum(xmin[:, None] + np.arange(ksize)[None, :], src.shape[0] - 1)
    if integer:
        scaled = weights * (1 << PRECISION_BITS)
        fixed = np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5)).astype(np.int64)
        acc = np.full((out_size,) + src.shape[1:], 1 << (PRECISION_BITS - 1), np.int64)
        for k in range(ksize):
            acc += src[index[:, k]].astype(np.int64) * fixed[:, k].reshape((-1,) + (1,) * (src.ndim - 1))
        out = np.clip(acc >> PRECISION_BITS, 0, 255).astype(np.uint8)
    else:
        acc = np.zeros((out_size,) + src.shape[1:], np.float64)
        for k in range(ksize):
            acc += src[index[:, k]].astype(np.float64) * weights[:, k].reshape((-1,) + (1,) * (src.ndim - 1))
        out = acc.astype(np.float32)
    return np.moveaxis(out, 0, axis)


def _nearest(a: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Pillow's NEAREST resize: an affine scaling whose source coordinate is accumulated step by step."""
    picks = []
    for in_size, out_size in zip(a.shape[:2], size_hw):
        step = in_size / out_size
        coords = np.cumsum(np.concatenate([[step * 0.5], np.full(out_size - 1, step)]))
        picks.append(np.minimum(coords.astype(np.int64), in_size - 1))
    return a[picks[0]][:, picks[1]]


def resize(image: np.ndarray, size_hw: tuple[int, int], interpolation: str = "bilinear",
           pillow_major: int = 13) -> np.ndarray:
    """Pillow's ``Image.resize`` on a (H, W) or (H, W, C) array: uint8 stays uint8 (8-bit fixed point),
    everything else is resized as float32 ('F' images); the pass order of the Pillow release that made the
    bundle's reference (``pillow_major``)."""
    if image.shape[:2] == tuple(size_hw):
        return image
    integer = image.dtype == np.uint8
    if not integer:
        image = image.astype(np.float32, copy=False)
    if interpolation == "nearest":
        return _nearest(image, size_hw)
    h, w = size_hw
    src_h, src_w = image.shape[:2]
    # Each pass rounds (to 8 bits or to float32), so the order is part of the answer. Pillow 13 runs the vertical
    # pass first when the height shrinks by more than twice as many pixels as the width (older Pillow always ran
    # the horizontal one first: the same frame can differ by one grey level between the two versions).
    vertical_first = pillow_major >= 13 and src_h - h > 0 and src_h - h > (src_w - w) * 2
    axes = [(0, h), (1, w)] if vertical_first else [(1, w), (0, h)]
    for axis, size in axes:
        if size != image.shape[axis]:
            image = _resample_axis(image, axis, size, interpolation, integer)
    return image


# --- frames in: the checks predict makes, then the spec's ops ----------------------------------------------


class StepError(ValueError):
    """A request this step refuses: the message names the problem and the fix, as edgemed's errors do."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem} — fix: {fix}")


MAX_IMAGE_PIXELS = 64_000_000  # edgemed.preprocess.MAX_IMAGE_PIXELS


def check_frame(image: np.ndarray) -> np.ndarray:
    """edgemed.preprocess.check_image's rules: a numeric (H, W) or (H, W, 3) frame, alpha dropped, finite."""
    if image.dtype.kind not in "uifb":
        raise StepError(f"image dtype {image.dtype} is not numeric", "send an integer or float frame")
    if image.dtype.kind == "b":
        image = image.astype(np.uint8)
    if image.ndim == 3 and image.shape[2] in (1, 2, 4):
        image = image[:, :, 0] if image.shape[2] in (1, 2) else image[:, :, :3]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise StepError(f"image shape {image.shape} is not (H, W, C) with C 1-4", "send one grey or RGB frame")
    if image.shape[0] < 1 or image.shape[1] < 1 or image.shape[0] * image.shape[1] > MAX_IMAGE_PIXELS:
        raise StepError(f"image is {image.shape[0]}x{image.shape[1]} pixels", "send a non-empty frame of at most "
                        f"{MAX_IMAGE_PIXELS} pixels")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise StepError("image contains NaN or Inf values", "replace or mask non-finite pixels")
    return image


def check_range(image: np.ndarray, expected: dict | None) -> None:
    """edgemed.input_range.check's two rules on the range recorded at conversion (None: not checked)."""
    if expected is None or not image.size:
        return
    lo, hi = float(np.min(image)), float(np.max(image))
    low, high = expected["low"], expected["high"]
    span = high - low
    seen = f"the model was calibrated on frames with values in [{low:g}, {high:g}] ({expected['frames']} frames)"
    if hi > high + span or lo < low - span:
        raise StepError(f"frame values reach [{lo:g}, {hi:g}], far outside the range its spec expects: {seen}",
                        "bring the frame into that range first")
    if image.dtype.kind == "f" and 0 <= lo < hi <= 1 and high >= 32.0:
        raise StepError(f"float frame values lie in [{lo:g}, {hi:g}], as if already scaled to [0, 1]: {seen}",
                        "send the frame as it was before scaling (x 255)")


def to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.dtype == np.uint8:  # Pillow's convert("L"): ITU-R 601-2 luma in 16-bit fixed point
        rgb = image.astype(np.uint32)
        return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)
    rgb = image.astype(np.float32, copy=False)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _resize_op(image: np.ndarray, p: dict, geo: list) -> np.ndarray:
    th, tw = p["size"]
    h, w = image.shape[:2]
    interpolation = p.get("interpolation", "bilinear")
    if not p.get("keep_aspect", False):
        geo.append([1, h, w, th, tw, 0, 0, th, tw])
        return resize(image, (th, tw), interpolation, p["pillow_major"])
    nh, nw = th, tw  # PIL.ImageOps.pad's letterbox, rounding included
    if w / h > tw / th:
        nh = max(1, round(h / w * tw))
    elif w / h < tw / th:
        nw = max(1, round(w / h * th))
    inner = resize(image, (nh, nw), interpolation, p["pillow_major"])
    top, left = round((th - nh) * 0.5), round((tw - nw) * 0.5)
    out = np.zeros((th, tw) + image.shape[2:], dtype=inner.dtype)
    out[top:top + nh, left:left + nw] = inner
    geo.append([1, h, w, th, tw, top, left, nh, nw])
    return out


def _center_crop(image: np.ndarray, p: dict, geo: list) -> np.ndarray:
    th, tw = p["size"]
    h, w = image.shape[:2]
    pt, pl = ((th - h) // 2 if th > h else 0), ((tw - w) // 2 if tw > w else 0)
    pb, pr = ((th - h + 1) // 2 if th > h else 0), ((tw - w + 1) // 2 if tw > w else 0)
    padded = np.pad(image, [(pt, pb), (pl, pr)] + [(0, 0)] * (image.ndim - 2)) if pt + pb + pl + pr else image
    ph, pw = padded.shape[:2]
    top, left = int(round((ph - th) / 2.0)), int(round((pw - tw) / 2.0))
    geo.append([2, h, w, th, tw, top - pt, left - pl, 0, 0])
    return padded[top:top + th, left:left + tw]


def _value_op(image: np.ndarray, p: dict) -> np.ndarray:
    x = image.astype(np.float32, copy=False)
    op = p["op"]
    if op == "scale":
        return x * np.float32(p["factor"])
    if op == "minmax":
        lo, hi = float(x.min()), float(x.max())
        return np.zeros_like(x) if hi <= lo else (x - lo) / np.float32(hi - lo)
    if op == "window":
        c, w = p["center"], p["width"]
        y = ((x.astype(np.float64) - (c - 0.5)) / (w - 1.0) + 0.5) if w > 1 else (x > c - 0.5).astype(np.float64)
        return np.clip(y, 0.0, 1.0).astype(np.float32)
    if op == "percentile_rescale":
        lo, hi = np.percentile(x, [p.get("low", 0.5), p.get("high", 99.5)])
        return np.zeros_like(x) if hi <= lo else np.clip((x - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)
    if op == "gamma":
        return np.power(np.clip(x, 0.0, None), np.float32(p["gamma"]))
    mean, std = np.asarray(p["mean"], np.float32), np.asarray(p["std"], np.float32)  # normalize
    if x.ndim == 2:
        return (x - mean.reshape(-1)[0]) / std.reshape(-1)[0]
    return (x - mean) / std


def prepare(frame: np.ndarray, config: dict) -> tuple[np.ndarray, np.ndarray]:
    """One frame → the model's input without its batch axis, and the geometry rows the post step reads."""
    image = check_frame(frame)
    check_range(image, config.get("value_range"))
    geo: list = []
    for p in config["spec"]:
        op = p["op"]
        if op == "to_gray":
            image = to_gray(image)
        elif op == "to_rgb":
            image = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
        elif op == "resize":
            image = _resize_op(image, {**p, "pillow_major": config["pillow_major"]}, geo)
        elif op == "center_crop":
            image = _center_crop(image, p, geo)
        else:
            image = _value_op(image, p)
    x = np.asarray(image, dtype=np.float32)
    channels, (h, w) = config["channels"], config["size"]
    have = 1 if x.ndim == 2 else x.shape[2]
    if have != channels or x.shape[:2] != (h, w):
        raise StepError(f"the frame is {x.shape[0]}x{x.shape[1]} with {have} channel(s) after preprocessing; the "
                        f"model takes {h}x{w} with {channels}", "send frames like the ones the bundle was made for")
    if x.ndim == 2:
        x = x[None] if config["layout"] == "NCHW" else x[:, :, None]
    elif config["layout"] == "NCHW":
        x = x.transpose(2, 0, 1)
    if not np.isfinite(x).all():
        raise StepError("preprocessing produced NaN or Inf", "check the spec's scale/normalize parameters")
    rows = np.zeros((GEOMETRY_ROWS + 1, 9), np.float64)
    rows[0, :3] = (0, frame.shape[0], frame.shape[1])
    if len(geo) > GEOMETRY_ROWS:
        raise StepError(f"the spec has {len(geo)} resize/crop steps", f"use at most {GEOMETRY_ROWS}")
    rows[1:1 + len(geo)] = geo
    return np.ascontiguousarray(x), rows


def pre_step(frames: np.ndarray, config: dict) -> dict[str, np.ndarray]:
    """A request's frames (B, H, W, C) → the engine's input batch and each frame's geometry."""
    if frames.ndim != 4:
        raise StepError(f"IMAGE has shape {frames.shape}, not (B, H, W, C)",
                        "send frames with a batch axis first and a channel axis last (1 for grey)")
    if not config["batched"] and len(frames) != 1:
        raise StepError(f"this model answers one frame per request, got {len(frames)}",
                        "send one frame per request (Triton batches requests)")
    prepared = [prepare(f, config) for f in frames]
    return {"TENSOR": np.stack([t for t, _ in prepared]), "GEOMETRY": np.stack([g for _, g in prepared])}


# --- outputs back: what Pipeline.finish returns ----------------------------------------------------------


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def class_probabilities(output: np.ndarray, kind: str) -> np.ndarray:
    row = np.asarray(output, dtype=np.float32).reshape(-1)
    if kind == "probabilities":
        return row if row.size > 1 else np.array([1.0 - row[0], row[0]], dtype=np.float32)
    if row.size == 1:
        p = float(_sigmoid(row)[0])
        return np.array([1.0 - p, p], dtype=np.float32)
    return _softmax(row).astype(np.float32)


def _steps(rows: np.ndarray) -> tuple[tuple[int, int], list]:
    size = (int(rows[0, 1]), int(rows[0, 2]))
    return size, [[int(v) for v in r] for r in rows[1:] if r[0] in (1, 2)]


def to_original_geometry(maps: np.ndarray, steps: list, fill: list[float] | None = None,
                         pillow_major: int = 13) -> np.ndarray:
    """edgemed.postprocess.to_original_geometry: the maps back through the geometry, last step first."""
    for kind, sh, sw, dh, dw, a, b, c, d in reversed(steps):
        if kind == 2:
            full = np.zeros((maps.shape[0], sh, sw), np.float32)
            if fill is None:
                full[0] = 1.0
            else:
                full[:] = np.asarray(fill, np.float32)[:, None, None]
            y0, x0, y1, x1 = max(0, a), max(0, b), min(sh, a + dh), min(sw, b + dw)
            if y1 > y0 and x1 > x0:
                full[:, y0:y1, x0:x1] = maps[:, y0 - a:y1 - a, x0 - b:x1 - b]
            maps = full
        else:
            inner = maps[:, a:a + c, b:b + d]
            maps = inner if inner.shape[1:] == (sh, sw) else np.stack(
                [resize(np.ascontiguousarray(m, np.float32), (sh, sw), "bilinear", pillow_major) for m in inner])
    return maps


def segmentation_mask(output: np.ndarray, kind: str, rows: np.ndarray, pillow_major: int = 13) -> np.ndarray:
    """edgemed.postprocess.segmentation_mask: the class map at the frame's own size (two classes through the
    margin map, as there: the same mask)."""
    _, steps = _steps(rows)
    maps = np.asarray(output, dtype=np.float32)
    if maps.shape[0] in (1, 2):
        if maps.shape[0] == 1:
            margin = 2.0 * (maps[0] if kind == "probabilities" else _sigmoid(maps[0])) - 1.0
        else:
            margin = maps[1] - maps[0]
            if kind != "probabilities":
                margin = np.tanh(margin * np.float32(0.5))
        margin = to_original_geometry(margin.astype(np.float32)[None], steps, [-1.0], pillow_major)[0]
        return (margin > 0).astype(np.uint8)
    probs = maps if kind == "probabilities" else _softmax(maps, axis=0)
    maps = to_original_geometry(probs.astype(np.float32), steps, None, pillow_major)
    return np.argmax(maps, axis=0).astype(np.uint8)


_CXCYWH = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [-0.5, 0, 0.5, 0], [0, -0.5, 0, 0.5]], np.float32)


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    a, b = box.astype(np.float64), others.astype(np.float64)
    inter = (np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
             * np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None))
    area_a = max(a[2] - a[0], 0) * max(a[3] - a[1], 0)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, threshold: float, cap: int) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    gone = np.zeros(scores.size, bool)
    for pos, i in enumerate(order):
        if gone[i]:
            continue
        keep.append(int(i))
        if len(keep) == cap:
            break
        rest = order[pos + 1:]
        same = rest[(classes[rest] == classes[i]) & ~gone[rest]]
        if same.size:
            gone[same[_iou(boxes[i], boxes[same]) > threshold]] = True
    return np.asarray(keep, np.int64)


def detections(outputs: dict[str, np.ndarray], post: dict, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """edgemed.detection_post.finish: boxes above the threshold mapped back, clipped, empty ones dropped, NMS."""
    size, steps = _steps(rows)
    names, form = post["outputs"], post["form"]
    if form in ("nms", "torchvision"):
        boxes = np.asarray(outputs[names["boxes"]], np.float32).reshape(-1, 4)
        scores = np.asarray(outputs[names["scores"]], np.float32).reshape(-1)
        role = "classes" if form == "nms" else "labels"
        classes = np.asarray(outputs[names[role]]).reshape(-1).astype(np.int64) - post["label_offset"]
        keep = scores > post["score_threshold"]
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    else:
        if form == "edgemed":
            raw_boxes, raw_scores = outputs[names["boxes"]][0], outputs[names["scores"]][0]
        else:
            raw = outputs[names["raw"]][0]
            raw_boxes, raw_scores = raw[:4].T @ _CXCYWH, raw[4:].T
        cells, classes = np.nonzero(raw_scores > post["score_threshold"])
        boxes = raw_boxes[cells].astype(np.float32)
        scores, classes = raw_scores[cells, classes].astype(np.float32), classes.astype(np.int64)
    b = boxes.astype(np.float64).copy()
    for kind, sh, sw, _dh, _dw, a, c_, h, w in reversed(steps):
        if kind == 2:
            b[:, [0, 2]] += c_
            b[:, [1, 3]] += a
        else:
            b[:, [0, 2]] = (b[:, [0, 2]] - c_) * (sw / w)
            b[:, [1, 3]] = (b[:, [1, 3]] - a) * (sh / h)
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, size[1])
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, size[0])
    b = b.astype(np.float32)
    solid = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    b, scores, classes = b[solid], scores[solid], classes[solid]
    if not scores.size:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32)
    threshold = 0.95 if form == "torchvision" else post["iou_threshold"]  # edgemed.detection_post.DUPLICATE_IOU
    keep = _nms(b, scores, classes, threshold, post["max_detections"])
    return b[keep], scores[keep], classes[keep].astype(np.int32)


def post_step(inputs: dict[str, np.ndarray], config: dict) -> dict[str, np.ndarray]:
    """The engine's outputs (``RAW_0``…, batch first) and ``GEOMETRY`` → the task's named outputs."""
    raw = [inputs[f"RAW_{i}"] for i in range(len(config["outputs"]))]
    rows = inputs["GEOMETRY"]
    answers, kind = config["answers"], config["output_kind"]
    for name, value in zip(config["outputs"], raw):
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise StepError(f"the model's output {name!r} holds NaN or Inf for this input",
                            "send data in the range the model was trained on")
    if "PROBABILITIES" in answers:  # a classifier's
        probs = np.stack([class_probabilities(raw[0][i], kind) for i in range(len(rows))]).astype(np.float32)
        labels = np.array([[config["labels"][int(np.argmax(p))].encode()] for p in probs], dtype=object)
        return {"PROBABILITIES": probs, "LABEL": labels}
    if "MASK" in answers:  # a segmenter's
        major = config["pillow_major"]
        return {"MASK": np.stack([segmentation_mask(raw[0][i], kind, rows[i], major) for i in range(len(rows))])}
    outputs = dict(zip(config["outputs"], raw))  # a detector's (BOXES, SCORES, CLASSES)
    boxes, scores, classes = detections(outputs, config["box_decoding"], rows[0])
    return {"BOXES": boxes[None], "SCORES": scores[None], "CLASSES": classes[None]}


def load_config(text: str) -> dict:
    """The step's configuration (written by the export as ``steps.json`` beside this file)."""
    config = json.loads(text)
    config["size"] = tuple(config["size"])
    return config
