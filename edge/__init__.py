"""edgemed: deploy medical-imaging CNNs and U-Nets to edge devices with measured, clinical drift checks.

``import edgemed`` and ``edgemed.load(...).predict(...)`` import neither torch nor onnx.
"""

from ._version import __version__
from .errors import BackendUnavailable, BundleError, ConversionError, EdgemedError, InputError
from .io.images import read_frames, read_image
from .loading import load
from .pipeline import Pipeline

__all__ = [
    "__version__", "load", "Pipeline", "read_image", "read_frames",
    "EdgemedError", "BundleError", "InputError", "ConversionError", "BackendUnavailable",
]
