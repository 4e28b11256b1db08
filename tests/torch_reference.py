"""PyTorch reference engine for the tests: the source model behind the Engine protocol.

Test-only: the runtime path must not import torch, and the converters compute their reference
with :func:`edgemed.converters.reference.reference_outputs`. Tests use it to compare deployed
artifacts with the model as trained, through the same protocol as every engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgemed.runtimes.base import Engine, TensorInfo


class TorchReferenceEngine(Engine):
    backend = "pytorch"

    def __init__(self, module: Any, input_shape: list, input_name: str = "input", output_name: str = "output"
                 ) -> None:
        import torch

        self.module = module.eval()
        self._torch = torch
        self.inputs = [TensorInfo(input_name, tuple(["batch"] + list(input_shape[1:])))]
        self.outputs = [TensorInfo(output_name, ("batch",))]

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._torch.no_grad():
            out = self.module(self._torch.from_numpy(np.ascontiguousarray(feed[self.inputs[0].name])))
        return {self.outputs[0].name: out.float().numpy()}

    def describe(self) -> dict:
        return {**super().describe(), "torch": self._torch.__version__}
