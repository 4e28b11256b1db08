"""The Task protocol: every way tasks differ, stated once per task, in six facets: running (reading the engine's
output into a result, ensembles), judging (the gate's budget and metrics, margins, clinical tests), converting
(checks, labels, postprocess, its own steps), serving (Triton tensors), reporting (the CLI's line, the page, the
SR and pictures, bench's figures and worst cases, occlusion) and data (shipped sets, ground truth).

Why a protocol rather than branches: a task's rules were spread over the pipeline, gate, converters, bench, DICOM,
CLI and Triton modules, each with its own ``if task == ...``; a new task then meant finding every branch. Here a
task is one module (:mod:`edgemed.tasks.classification`, ...), and code elsewhere asks
:func:`edgemed.tasks.task_named`. Why facets: 47 members in one list are hard to read and to implement; each
facet says who reads it.
No torch, no onnx: the runtime path imports this.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import OptionError
from ..manifest import Postprocess

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


SHOWN = 3  # worst cases shown per artifact and kind: enough to see a pattern, small enough for every history row


@dataclass(frozen=True)
class ReportFrame:
    """One frame of a DICOM source as a structured report's measurement groups see it (made by
    :func:`edgemed.pacs.results.write_sr`): the source, the frame's number, how a group's stable UID is made from its
    role ("frame 2 box 0"), the private coding scheme for the model's own class names, and one pixel's area."""

    source: Any
    number: int
    uid: Callable[[str], str]
    scheme: str
    pixel_area: float  # mm² where the source states its spacing, else 1
    area_unit: str  # "mm2" or "pixels"

    def concept(self, name: str) -> Any:
        """A class name of the model as a coded concept of the private scheme (DICOM's length limits kept)."""
        from highdicom.sr import CodedConcept

        return CodedConcept(value=name[:16], scheme_designator=self.scheme, meaning=name[:64])

    def tracking(self, role: str) -> Any:
        import highdicom as hd

        return hd.sr.TrackingIdentifier(uid=self.uid(role), identifier=role)


class Running(Protocol):
    """How a task's answer is made and compared at run time: ``predict``'s result, ensembles' combination, a
    reload's same answer (the pipeline, ensembles, streaming and soaks read these)."""

    name: str
    plural: str  # what people call models of this task ("segmenters"), in messages
    #: a frame's outputs differ in size from frame to frame (a detector's boxes after NMS): one frame per engine call
    #: and per served request, outputs measured and stored case by case, never stacked; others batch
    ragged_outputs: bool
    #: outputs are maps on the frame's pixels: a flipped view's output is flipped back, and models combined must
    #: map frames to their input alike
    spatial: bool
    #: why models of this task cannot be ensembled ("" where they can)
    ensemble_refusal: str

    def finish(self, outputs: Mapping[str, np.ndarray], pipe: RunContext, prepared: Prepared) -> Any:
        """The result ``predict`` returns, from the engine's outputs of one input (already checked finite)."""

    def combine(self, outputs: Sequence[np.ndarray], kinds: Sequence[str], weights: Sequence[float],
                combine: str) -> tuple[np.ndarray, str]:
        """An ensemble's raw answer from one output per (member, view), and how to read it
        (:mod:`edgemed.tasks.combine` defines the combinations)."""

    def combined_result(self, output: np.ndarray, kind: str, geometry: Any, labels: list[str]) -> Any:
        """The result of an ensemble's combined raw answer, of the type ``predict`` returns."""

    def same_answer(self, a: Any, b: Any) -> bool:
        """Two results of this task are the same answer, bit for bit (a soak or a reload must give them)."""


class Judging(Protocol):
    """What the gate holds an artifact of this task to: the budget and its metrics, FP32's margins, the paired
    clinical tests against ground truth (edgemed.gate and edgemed.converters read these)."""

    #: the gate's budget when the user sets none (:func:`edgemed.gate.verdict.default_budget` reads it, nothing else)
    default_budget: str
    #: the metrics of :data:`edgemed.measures.comparison.METRICS` its comparison reports, which a budget may bound
    drift_metrics: tuple[str, ...]
    #: FP32 decision margins exist per case (the gate's flip-rate estimate); detectors have none: after NMS a box's
    #: appearing or vanishing has no single margin, so their counts are bounded by counting alone
    has_margins: bool
    #: the per-case score against ground truth is 1/0 (a call right or wrong), not a fraction (Dice): paired
    #: comparisons then use exact counts
    binary_case_scores: bool
    #: the comparison's per-case figure a bench row keeps for every case: FP32's call kept, its lesions kept, Dice
    case_figure: str

    def start_comparison(self, kind: str, label_names: list[str] | None) -> Any:
        """An empty drift comparison to feed case by case (``add(reference, candidate)``, then ``finish()``)."""

    def compare(self, reference: Any, candidate: Any, kind: str, label_names: list[str] | None) -> Any:
        """A candidate's outputs against FP32's on the same cases, as a
        :class:`edgemed.measures.comparison.Comparison`."""

    def case_margins(self, output: Any, kind: str) -> dict[str, Any]:
        """One case's FP32 decision margins per agreement metric (:class:`edgemed.measures.margins.Margins`)."""

    def population_margins(self, reference: Any, kind: str) -> dict[str, Any]:
        """The FP32 margins of every case (at most MAX_POPULATION, spaced) the gate's flip-rate estimate takes."""

    def clinical_tests(self, truth: Any, fp32: Any, cand: Any, kind: str, labels: list[str],
                       margin: float) -> dict[str, Any]:
        """The candidate against ground truth beside FP32 on the same labelled cases, one paired test per figure
        this task is held to (:mod:`edgemed.measures.clinical` has the statistics and the verdict rule)."""


class Converting(Protocol):
    """What conversion checks and records for this task (edgemed.converters; data and checks only: a task's own
    conversion steps live in the converters, named here as a module and imported there, so tasks stay below them)."""

    #: the convert options only models of this task take (their group in ``convert --help``), None where none
    option_group: str | None
    #: the input kinds this task converts besides images (beat classifiers read "signal" windows)
    other_input_kinds: tuple[str, ...]
    #: models may read inputs beside the main one (``--features``)
    takes_features: bool
    #: ``--explain`` applies: one class score per image for a class activation map to explain
    explainable: bool
    #: the exported graph ends in several outputs read together (a detector's boxes and scores), not one
    several_outputs: bool
    #: the module of edgemed.converters holding this task's own conversion steps (``setup`` after export,
    #: ``torch_output_names`` at export), or None where the generic steps do
    conversion_steps: str | None
    #: what the model outputs, in words (the SBOM's model card)
    output_format: str

    def output_labels(self, reference: np.ndarray, labels: tuple[str, ...] | None) -> list[str]:
        """The class names of a model whose FP32 output on one case is ``reference``: ``labels`` checked against
        the output's shape, or the defaults (a wrong task is refused here, in one line)."""

    def postprocess(self, reference: np.ndarray, detection: Any = None) -> Postprocess:
        """How a converted model's output becomes a decision (activation, decision, resizing), for the manifest
        (``detection``: a detector's NMS record from its set-up)."""

    def truth_in_input(self, truth: list, geometry: list) -> list:
        """Ground truth in the model input's frame (boxes through each case's preprocessing geometry); labels and
        masks, read at the input's size already, unchanged."""


class Serving(Protocol):
    """The tensors a served model of this task answers with, and reading them back (Triton export, model, client)."""

    def served_outputs(self, labels: Sequence[str]) -> list[ServedTensor]:
        """The tensors a served model of this task answers with (the Python-backend and native exports)."""

    def served_arrays(self, results: Sequence[Any]) -> dict[str, np.ndarray]:
        """Those tensors for a batch of results, batch axis first (what the Python backend sends back)."""

    def from_served(self, arrays: Mapping[str, np.ndarray], labels: list[str]) -> Any:
        """The first result of served tensors read back (``predict --server``), the same object ``predict`` gives."""


class Reporting(Protocol):
    """What a person reads: the CLI's line, the page's figures, the DICOM SR and pictures, bench's figures against
    ground truth and its worst cases, and what occlusion explains."""

    def summary(self, record: Mapping[str, Any]) -> str:
        """The line the CLI prints after an input's name, from the result's JSON form."""

    def figures(self, result: Any, labels: list[str]) -> dict[str, str]:
        """The result as named lines for a person (the page's answer panel)."""

    def render(self, image: np.ndarray, result: Any, labels: list[str]) -> np.ndarray:
        """The frame as 8-bit RGB with the answer drawn on it (a DICOM SC, the page's overlay)."""

    def sr_groups(self, frame: ReportFrame, result: Any, labels: list[str]) -> list:
        """The measurement groups (highdicom) one frame's result adds to the DICOM SR: the finding and its
        probabilities, each box as a region, or each class's area."""

    def truth_report(self, truth: list, results: Sequence[Any], labels: list[str], postprocess: Postprocess) -> dict:
        """Accuracy against ground truth on a data set, each figure with its interval and case count (bench)."""

    def truth_summary(self, report: Mapping[str, Any]) -> str:
        """:meth:`truth_report`'s figures in one line, each with its 95% bounds and case count."""

    def truth_per_case(self, truth: list, results: Sequence[Any], labels: list[str]) -> np.ndarray:
        """Each case's score against ground truth (1/0 a call right, or mean Dice over foreground classes), what
        paired comparisons of two models on the same cases pair."""

    def worst_vs_fp32(self, per_case: Mapping[str, np.ndarray], results: Sequence[Any],
                      labels: list[str]) -> list[tuple[int, str]]:
        """The few cases where a candidate differs most from FP32 (``per_case``: its comparison's figures), each
        with its caption, most changed first; none where it never differs."""

    def worst_vs_truth(self, truth: list, results: Sequence[Any], labels: list[str]) -> list[tuple[int, str]]:
        """The few cases a model gets most wrong against the ground truth, each with its caption."""

    def explained_score(self, output: np.ndarray, kind: str,
                        labels: list[str]) -> tuple[Callable[[np.ndarray], float], str]:
        """What occlusion explains, fixed by the uncovered frame's ``output``: a function of any output giving that
        score, and its name ("probability of 'malignant'"). Detectors explain each box's score instead
        (:mod:`edgemed.explain.occlusion`), and refuse this."""


class Data(Protocol):
    """What edgemed ships for this task and how ground truth of it is read."""

    #: what edgemed ships for this task (edgemed.samples; paths below assets/samples): a folder of sample frames, a
    #: calibration set and the held-out set the shipped models' verdicts are taken on (None: the calibration
    #: file's leftover cases); an input kind that ships its own (signals) overrides the last two
    shipped_samples: str
    shipped_calibration: str
    shipped_verdict: str | None
    #: the ground truth of the shipped sample frames (a file or folder under assets/samples)
    shipped_truth: str

    def load_truth(self, path: Path, images: Any, label_names: list[str], implicit: bool) -> list | None:
        """Ground truth aligned with ``images`` from a file or folder in the forms this task reads
        (:mod:`edgemed.measures.truth`); ``implicit``: ``path`` is the images' own .npz, which may hold none (None
        then)."""


class Task(Running, Judging, Converting, Serving, Reporting, Data, Protocol):
    """What one task (classification, segmentation, detection) means to every part of edgemed: its six facets,
    which a task module implements in one class (``task_named`` gives it)."""


def compare_cases(comparison: Any, reference: Any, candidate: Any) -> Any:
    """Feed a comparison the cases of two equally long sequences and finish it."""
    for r, c in zip(reference, candidate, strict=True):
        comparison.add(r, c)
    return comparison.finish()


def timings_ms(timings: Mapping[str, float]) -> dict[str, float]:
    """A result's stage timings (seconds) as its JSON form gives them: milliseconds, to the microsecond."""
    return {k: round(v * 1e3, 3) for k, v in timings.items()}


def interval_text(i: Mapping[str, Any]) -> str:
    """A figure with its 95% bounds and case count, as every table and line prints it."""
    return f"{i['value']:.3f} [{i['low']:.3f}, {i['high']:.3f}] n={i['cases']}"


def checked_labels(labels: Sequence[str] | None, default: list[str]) -> list[str]:
    """``--labels`` held against the classes the model outputs, which ``default`` names when none are given."""
    if labels is None:
        return default
    if len(labels) != len(default):
        raise OptionError(f"--labels names {len(labels)} classes but the model outputs {len(default)}",
                          f"give {len(default)} names, e.g. {','.join(default)}")
    return list(labels)


def activation_of(reference: np.ndarray) -> str:
    """One output channel is a sigmoid's score; several are a softmax's."""
    return "sigmoid" if reference.shape[1] == 1 else "softmax"
