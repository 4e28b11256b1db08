"""The Task protocol: every way the four concerns of a task differ (reading the engine's output into a result,
the gate's default budget, the tensors a Triton model answers with, the line a CLI prints) stated once per task.

Why a protocol rather than branches: a task's rules were spread over pipeline, gate, CLI and three Triton
modules, each with its own ``if task == ...``; a new task then meant finding every branch. Here a task is one
module (:mod:`edgemed.tasks.classification`, ...), and code elsewhere asks :func:`edgemed.tasks.task_named`.
No torch, no onnx: the runtime path imports this.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from ..preprocess import Prepared


class RunContext(Protocol):
    """What a task's ``finish`` reads of the pipeline that ran the engine (a protocol, so tasks sit below the
    pipeline in the layers: edgemed.pipeline asks the task, never the other way round)."""

    output_name: str
    output_kind: str
    labels: list[str]
    explainer: Any  # classifiers converted with --explain: edgemed.explain.saliency's explainer, else None
    detection: Any  # detectors: the manifest's detection record, else None


@dataclass(frozen=True)
class ServedTensor:
    """One tensor of a Triton model's configuration: its name, Triton's ``TYPE_*`` and its dims (without the batch
    axis where the model is batched; -1 where a size varies)."""

    name: str
    dtype: str
    dims: tuple[int, ...]

    def pbtxt(self) -> str:
        """The tensor as a ``config.pbtxt`` entry."""
        return f'  {{ name: "{self.name}" data_type: {self.dtype} dims: [ {", ".join(map(str, self.dims))} ] }}'

    def batched(self) -> ServedTensor:
        """The same tensor with its batch axis spelled out (a model without Triton's batching)."""
        return ServedTensor(self.name, self.dtype, (-1, *self.dims))


class Task(Protocol):
    """What one task (classification, segmentation, detection) means to every part of edgemed."""

    name: str
    plural: str  # what people call models of this task ("segmenters"), in messages
    #: the gate's budget when the user sets none (:func:`edgemed.gate.verdict.default_budget` reads it, nothing else)
    default_budget: str
    #: one frame per engine call and per served request (a detector's boxes are per frame); others batch
    one_frame_per_call: bool
    #: outputs are maps on the frame's pixels: a flipped view's output is flipped back, and models combined must
    #: map frames to their input alike
    spatial: bool
    #: why models of this task cannot be ensembled ("" where they can)
    ensemble_refusal: str
    #: FP32 decision margins exist per case (the gate's flip-rate estimate); detectors have none: after NMS a box's
    #: appearing or vanishing has no single margin, so their counts are bounded by counting alone
    has_margins: bool

    def start_comparison(self, kind: str, label_names: list[str] | None) -> Any:
        """An empty drift comparison to feed case by case (``add(reference, candidate)``, then ``finish()``)."""

    def compare(self, reference: Any, candidate: Any, kind: str, label_names: list[str] | None) -> Any:
        """A candidate's outputs against FP32's on the same cases, as a
        :class:`edgemed.measures.comparison.Comparison`."""

    def case_margins(self, output: Any, kind: str) -> dict[str, Any]:
        """One case's FP32 decision margins per agreement metric (:class:`edgemed.measures.margins.Margins`)."""

    def population_margins(self, reference: Any, kind: str) -> dict[str, Any]:
        """The FP32 margins of every case (at most MAX_POPULATION, spaced) the gate's flip-rate estimate takes."""

    def combine(self, outputs: Sequence[np.ndarray], kinds: Sequence[str], weights: Sequence[float],
                combine: str) -> tuple[np.ndarray, str]:
        """An ensemble's raw answer from one output per (member, view), and how to read it
        (:mod:`edgemed.ensemble.combine` defines the combinations)."""

    def combined_result(self, output: np.ndarray, kind: str, geometry: Any, labels: list[str]) -> Any:
        """The result of an ensemble's combined raw answer, of the type ``predict`` returns."""

    def finish(self, outputs: Mapping[str, np.ndarray], pipe: RunContext, prepared: Prepared) -> Any:
        """The result ``predict`` returns, from the engine's outputs of one input (already checked finite)."""

    def served_outputs(self, labels: Sequence[str]) -> list[ServedTensor]:
        """The tensors a served model of this task answers with (the Python-backend and native exports)."""

    def served_arrays(self, results: Sequence[Any]) -> dict[str, np.ndarray]:
        """Those tensors for a batch of results, batch axis first (what the Python backend sends back)."""

    def from_served(self, arrays: Mapping[str, np.ndarray], labels: list[str]) -> Any:
        """The first result of served tensors read back (``predict --server``), the same object ``predict`` gives."""

    def summary(self, record: Mapping[str, Any]) -> str:
        """The line the CLI prints after an input's name, from the result's JSON form."""

    def figures(self, result: Any, labels: list[str]) -> dict[str, str]:
        """The result as named lines for a person (the page's answer panel)."""

    def render(self, image: np.ndarray, result: Any, labels: list[str]) -> np.ndarray:
        """The frame as 8-bit RGB with the answer drawn on it (a DICOM SC, the page's overlay)."""

    def clinical_tests(self, truth: Any, fp32: Any, cand: Any, kind: str, labels: list[str],
                       margin: float) -> dict[str, Any]:
        """The candidate against ground truth beside FP32 on the same labelled cases, one paired test per figure
        this task is held to (:mod:`edgemed.measures.clinical` has the statistics and the verdict rule)."""

    def load_truth(self, path: Path, images: Any, label_names: list[str], implicit: bool) -> list | None:
        """Ground truth aligned with ``images`` from a file or folder in the forms this task reads
        (:mod:`edgemed.measures.truth`); ``implicit``: ``path`` is the images' own .npz, which may hold none (None
        then)."""


def compare_cases(comparison: Any, reference: Any, candidate: Any) -> Any:
    """Feed a comparison the cases of two equally long sequences and finish it."""
    for r, c in zip(reference, candidate, strict=True):
        comparison.add(r, c)
    return comparison.finish()
