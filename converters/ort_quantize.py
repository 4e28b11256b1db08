"""ONNX Runtime artifacts: static QDQ INT8 (per-channel weights) and FP16 with float32 I/O.

INT8 follows ORT's documented path: ``quant_pre_process`` (shape inference and graph
optimisation), then ``quantize_static`` in QDQ format. ConvTranspose and Resize, common in
U-Net decoders, are quantized like Conv. Node names to keep in float come from the accuracy
fallback (:mod:`edgemed.converters.fallback`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgemed.datasets import ImageSet
from edgemed.errors import ConversionError, first_line
from edgemed.preprocess import Preprocessor

from .calibration import input_names, preprocess_stream
from .cases import as_feed

OP_TYPES = ["Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "Concat", "MaxPool", "AveragePool",
            "GlobalAveragePool", "Resize", "Relu", "Sigmoid"]


def make_reader(images: ImageSet, pre: Preprocessor, input_name: str):
    from onnxruntime.quantization import CalibrationDataReader

    names = input_names(pre, input_name)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = None

        def get_next(self):
            if self._it is None:
                self._it = preprocess_stream(images, pre)
            tensor = next(self._it, None)
            return None if tensor is None else as_feed(names, tensor)

        def rewind(self) -> None:
            self._it = None

    return Reader()


def preprocess_for_quantization(fp32: Path, out: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(fp32), str(out), skip_symbolic_shape=True)
    except Exception as exc:  # noqa: BLE001 - falls back to the plain model; recorded by caller
        raise ConversionError(f"quant_pre_process failed ({first_line(exc, 200)})", "report the model") from exc
    return out


def quantize_int8(prepared: Path, out: Path, images: ImageSet, pre: Preprocessor, input_name: str,
                  method: str = "minmax", exclude: Sequence[str] = (), symmetric_activations: bool = False) -> dict:
    """Write a QDQ INT8 model; returns the settings used (for the report)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    extra = {"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True}
    if method == "percentile":
        extra["CalibPercentile"] = 99.99
    try:
        quantize_static(
            str(prepared), str(out), make_reader(images, pre, input_name),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=OP_TYPES, per_channel=True,
            activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude), calibrate_method=methods[method],
            extra_options=extra,
        )
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"onnxruntime INT8 quantization failed ({first_line(exc, 200)})",
                              "try --calib-method minmax, or exclude the model from int8") from exc
    settings = {"method": method, "per_channel": True, "format": "QDQ",
                "activations": "int8 symmetric" if symmetric_activations else "uint8 asymmetric",
                "weights": "int8 symmetric per-channel", "calibration_images": len(images)}
    recurrent = quantize_recurrent(out, exclude)
    if recurrent:
        settings["recurrent"] = recurrent
    return settings


RECURRENT = ("LSTM", "GRU", "RNN")


def quantize_recurrent(model: Path, exclude: Sequence[str] = ()) -> str | None:
    """Static QDQ leaves recurrent layers in float (ONNX Runtime has no QDQ form of them). LSTM weights go to
    INT8 by ONNX Runtime's dynamic quantization (its DynamicQuantizeLSTM kernel; activations quantized per call);
    GRU and plain RNN have no quantized kernel in ONNX Runtime and stay in float. Returns what was done, for
    the report; None when the model has no recurrent layer."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = [n for n in onnx.load(str(model), load_external_data=False).graph.node if n.op_type in RECURRENT]
    if not nodes:
        return None
    lstm = [n.name for n in nodes if n.op_type == "LSTM" and n.name not in exclude]
    floats = sorted({n.op_type for n in nodes if n.op_type != "LSTM"} | ({"LSTM"} if len(lstm) < sum(
        n.op_type == "LSTM" for n in nodes) else set()))
    done = []
    if lstm:
        tmp = model.with_name(model.stem + ".dynamic.onnx")
        try:
            quantize_dynamic(str(model), str(tmp), op_types_to_quantize=["LSTM"], nodes_to_quantize=lstm,
                             weight_type=QuantType.QInt8, per_channel=False)
            tmp.replace(model)
        except Exception as exc:  # noqa: BLE001
            tmp.unlink(missing_ok=True)
            raise ConversionError(f"onnxruntime dynamic quantization of the LSTM failed ({first_line(exc, 200)})",
                                  "drop int8 for onnx, or use --to openvino for INT8") from exc
        done.append(f"{len(lstm)} LSTM layer(s): int8 weights by dynamic quantization (DynamicQuantizeLSTM)")
    if floats:
        done.append(f"{', '.join(floats)} kept in float (no quantized kernel in ONNX Runtime, or kept by the "
                    "fallback)")
    return "; ".join(done)


def convert_fp16(fp32: Path, out: Path) -> dict:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32))
    try:
        half = convert_float_to_float16(model, keep_io_types=True)
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"FP16 conversion failed ({first_line(exc, 200)})", "drop fp16 from --precision") from exc
    onnx.save_model(half, str(out))
    return {"io": "float32 (casts inside the graph)"}


def scratch_dir():
    """Intermediate models live outside the bundle and vanish with the conversion (also when it is
    interrupted; ones a killed run left behind are removed by the next conversion)."""
    from edgemed.owned_dirs import scratch

    return scratch("edgemed-quant-")
