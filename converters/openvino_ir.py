"""OpenVINO artifacts: IR via ``openvino.convert_model`` (FP32, FP16-compressed weights) and
INT8 via NNCF post-training quantization on the same calibration images.

When plain ``nncf.quantize`` misses the drift budget, ``nncf.quantize_with_accuracy_control``
reverts the most harmful layers to float, measured with the same clinical metric the gate uses.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.datasets import ImageSet
from edgemed.errors import ConversionError, first_line
from edgemed.preprocess import Preprocessor

from .calibration import preprocess_stream


def _quiet_nncf() -> None:
    import nncf

    nncf.set_log_level(logging.WARNING)  # its per-layer INFO lines would drown the conversion report


@contextlib.contextmanager
def _silenced():
    """NNCF draws progress bars on the terminal; the conversion report says what matters."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def _read(onnx_path: Path, static_batch: int | None):
    import openvino as ov

    _quiet_nncf()

    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"OpenVINO cannot convert the ONNX model ({first_line(exc, 200)})",
                              "drop openvino from --to, or report the model") from exc
    if static_batch:  # every input (a model's feature inputs share the batch axis)
        model.reshape({i: [static_batch] + [int(d.get_length()) for d in list(i.partial_shape)[1:]]
                       for i in model.inputs})
    return model


def export_ir(onnx_path: Path, xml_path: Path, precision: str, static_batch: int | None = None) -> dict:
    import openvino as ov

    model = _read(onnx_path, static_batch)
    ov.save_model(model, str(xml_path), compress_to_fp16=(precision == "fp16"))
    return {"weights": "fp16 (compressed)" if precision == "fp16" else "fp32", "static_batch": static_batch}


class _Images:
    """A re-iterable NNCF data source: NNCF may pass over the calibration set more than once."""

    def __init__(self, images: ImageSet, pre: Preprocessor) -> None:
        self.images, self.pre = images, pre

    def __iter__(self):
        return preprocess_stream(self.images, self.pre)

    def __len__(self) -> int:
        return len(self.images)


# What is tried, in order: NNCF's defaults, then full (not fast) bias correction and none. On the shipped
# BreastMNIST CNN, NNCF's fast bias correction flipped 8.3% of test diagnoses (13/156); full bias correction, or
# none, flipped none. The MIXED preset (asymmetric activations) is not tried: on the shipped classifier and U-Net
# it predicted the same agreement as PERFORMANCE to 1e-4 in every variant, at the cost of a full NNCF run each.
VARIANTS = (("performance", "fast"), ("performance", "full"), ("performance", "none"))


LAYERS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")


def end_layers(onnx_path: Path) -> tuple[list[str], list[str]]:
    """OpenVINO names of the first and the last compute layers: the ones most often worth keeping in float
    (the first sees the raw image range, the last writes the logits)."""
    ops = [op for op in _read(onnx_path, None).get_ordered_ops() if op.get_type_name() in LAYERS]
    return ([ops[0].get_friendly_name()], [ops[-1].get_friendly_name()]) if ops else ([], [])


def quantize_ir(onnx_path: Path, xml_path: Path, images: ImageSet, pre: Preprocessor,
                static_batch: int | None = None, preset: str = "performance", keep_float: list[str] = (),
                bias_correction: str = "fast") -> dict:
    """NNCF post-training quantization with its defaults (symmetric weights and activations, fast bias
    correction), or ``preset="mixed"`` (asymmetric activations), ``bias_correction`` "full" or "none";
    ``keep_float`` layers stay in float."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    model = _read(onnx_path, static_batch)
    dataset = nncf.Dataset(_Images(images, pre))
    chosen = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}[preset]
    scope = nncf.IgnoredScope(names=list(keep_float), validate=False) if keep_float else None
    extra = {"fast_bias_correction": bias_correction != "full",
             "advanced_parameters": AdvancedQuantizationParameters(disable_bias_correction=bias_correction == "none")}
    try:
        with _silenced():
            quantized = nncf.quantize(model, dataset, subset_size=len(images), preset=chosen, ignored_scope=scope,
                                      **extra)
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"NNCF quantization failed ({first_line(exc, 200)})",
                              "drop int8 for openvino, or report the model") from exc
    ov.save_model(quantized, str(xml_path), compress_to_fp16=False)
    return {"tool": f"nncf {nncf.__version__}", "preset": preset, "bias_correction": bias_correction,
            "calibration_images": len(images), "accuracy_control": False, "kept_in_float": list(keep_float)}


class _Indexed:
    """Tuning cases as NNCF validation items, read from disk each pass: (index, input) pairs."""

    def __init__(self, cases: Any) -> None:
        self.cases = cases

    def __iter__(self):
        return enumerate(self.cases.inputs())

    def __len__(self) -> int:
        return len(self.cases)


def quantize_ir_with_accuracy_control(onnx_path: Path, xml_path: Path, images: ImageSet, pre: Preprocessor,
                                      evaluation: Any, score: Callable[[Iterable[tuple[int, dict]]], float],
                                      max_drop: float, static_batch: int | None = None,
                                      preset: str = "performance", bias_correction: str = "fast",
                                      per_case: bool = False) -> dict:
    """``evaluation``: the tuning cases (a CaseStore); ``score`` maps (index, outputs by name) of its cases to a
    metric where the FP32 model scores 1.0; ``per_case``: NNCF ranks layers by each case's score rather than by the
    outputs' error."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    model = _read(onnx_path, static_batch)
    calib = nncf.Dataset(_Images(images, pre))
    # Items carry their index, so a case's outputs are scored against that case's reference.
    validation = nncf.Dataset(_Indexed(evaluation), lambda item: item[1])

    def validate(compiled: Any, items: Iterable[tuple[int, np.ndarray]]) -> Any:
        names = [o.get_any_name() for o in compiled.outputs]
        cases = ((i, dict(zip(names, compiled(x).values()))) for i, x in items)
        if not per_case:
            return float(score(cases))
        # Outputs whose size varies per image (a detector's, after NMS) cannot be ranked by NNCF's default
        # output MSE: the per-case scores are returned instead, and NNCF ranks layers by their change.
        kept = list(cases)
        return float(score(kept)), [float(score([c])) for c in kept]

    try:
        with _silenced():
            quantized = nncf.quantize_with_accuracy_control(
                model, calib, validation, validate, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE,
                subset_size=len(images), preset={"performance": nncf.QuantizationPreset.PERFORMANCE,
                                                 "mixed": nncf.QuantizationPreset.MIXED}[preset],
                fast_bias_correction=bias_correction != "full",
                advanced_quantization_parameters=AdvancedQuantizationParameters(
                    disable_bias_correction=bias_correction == "none"),
            )
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"NNCF accuracy-controlled quantization failed ({first_line(exc, 200)})",
                              "drop int8 for openvino, or relax --drift-budget knowingly") from exc
    ov.save_model(quantized, str(xml_path), compress_to_fp16=False)
    return {"tool": f"nncf {nncf.__version__}", "preset": preset, "bias_correction": bias_correction,
            "calibration_images": len(images), "accuracy_control": True, "max_drop": max_drop}
