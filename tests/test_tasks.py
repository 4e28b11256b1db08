"""The Task seam (issue 19): each task states once what it means to the pipeline, gate, clinical judgement,
ground truth, CLI and Triton, and the rest of edgemed asks it. These tests hold each task to its protocol on the
shipped real data (BreastMNIST labels, BUSI frames and masks), and keep the count of task-name branches outside
``edgemed.tasks`` from growing back while the seam spreads.
"""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from edgemed.datasets import ImageSet, load_labels
from edgemed.errors import BundleError, InputError
from edgemed.samples import samples_dir
from edgemed.tasks import TASKS, task_named
from edgemed.tasks.base import Task

from .conftest import ROOT

CALIBRATION = samples_dir("calibration")
CNN_LABELS = ["malignant", "benign_or_normal"]  # the shipped classifier's (BreastMNIST: 0 malignant)


def test_every_task_keeps_the_protocol_and_an_unknown_one_is_refused_in_one_line():
    facets = [c for c in Task.__mro__[1:] if c.__module__ == Task.__module__]
    assert len(facets) == 6 and not [n for n in vars(Task) if not n.startswith("_")]  # Task only joins its facets
    members = [n for c in facets for n in [*vars(c), *c.__annotations__] if not n.startswith("_")]
    assert len(members) == len(set(members))  # each member in one facet
    for name, task in TASKS.items():
        assert task.name == name
        assert all(hasattr(task, m) for m in members), (name, [m for m in members if not hasattr(task, m)])
    with pytest.raises(BundleError, match=r"unknown task 'regression'.*classification, segmentation, detection"):
        task_named("regression")


def test_ground_truth_in_each_tasks_forms_from_the_shipped_data():
    """BreastMNIST's own .npz labels and its CSV give the same classes; BUSI masks from a folder and from the .npz
    agree pixel for pixel; a detector reads the masks as one box per lesion; the forms a task cannot grade with are
    refused in one line naming what to pass."""
    npz = ImageSet.open(CALIBRATION / "breastmnist_train.npz")
    classes = load_labels(None, npz, "classification", CNN_LABELS)
    assert len(classes) == 546 and set(classes) <= {0, 1}
    assert classes == [int(v) for v in np.load(CALIBRATION / "breastmnist_train.npz")["labels"].ravel()]
    frames = ImageSet.open(samples_dir("breastmnist"))
    by_csv = load_labels(samples_dir("breastmnist") / "labels.csv", frames, "classification", CNN_LABELS)
    assert len(by_csv) == len(frames)

    busi = ImageSet.open(samples_dir("busi"))
    masks = load_labels(samples_dir("busi_masks"), busi, "segmentation", ["background", "lesion"])
    assert len(masks) == len(busi) and all(set(np.unique(m)) <= {0, 1} for m in masks)
    boxes = load_labels(samples_dir("busi_masks"), busi, "detection", ["lesion"])
    assert len(boxes) == len(busi) and sum(len(b) for b, _ in boxes) >= len(busi) // 2

    verdict = ImageSet.open(CALIBRATION / "busi_verdict540.npz")
    from_npz = load_labels(None, verdict, "segmentation", ["background", "lesion"])
    assert len(from_npz) == 540 and from_npz[0].shape == (128, 128)
    with pytest.raises(InputError, match="a folder of masks is for segmentation"):
        load_labels(samples_dir("busi_masks"), busi, "classification", CNN_LABELS)
    with pytest.raises(InputError, match="cannot grade a segmenter"):
        load_labels(samples_dir("breastmnist") / "labels.csv", frames, "segmentation", ["background", "lesion"])


def test_clinical_tests_of_each_task_on_real_cases():
    """FP32 against itself passes every figure with no drop; a candidate that calls every malignant case benign
    fails the malignant class's sensitivity (classification); a candidate that erases every mask fails Dice."""
    from edgemed.measures.clinical import clinical_record

    data = np.load(CALIBRATION / "breastmnist_train.npz")
    truth = data["labels"].ravel().astype(int)
    logits = np.eye(2, dtype=np.float32)[truth] * 4 - 2  # a perfect classifier's logits
    cls = task_named("classification")
    same = clinical_record(cls.clinical_tests(truth, logits, logits, "logits", CNN_LABELS, 0.005), 0.005,
                           len(truth))
    assert same.verdict == "passed" and all(t.drop == 0 for t in same.tests.values())
    blind = logits.copy()
    blind[:] = [-2, 2]  # every case called benign_or_normal
    worse = cls.clinical_tests(truth, logits, blind, "logits", CNN_LABELS, 0.005)
    assert worse["sensitivity[malignant]"].verdict == "failed"
    assert clinical_record(worse, 0.005, len(truth)).verdict == "failed"

    verdict = np.load(CALIBRATION / "busi_verdict540.npz")
    masks = [m.astype(np.uint8) for m in verdict["masks"] if m.any()][:60]  # lesions (normal scans have none)
    perfect = [np.stack([1.0 - m, m]).astype(np.float32)[None] * 8 - 4 for m in masks]
    empty = [np.stack([np.ones_like(m), np.zeros_like(m)]).astype(np.float32)[None] * 8 - 4 for m in masks]
    seg = task_named("segmentation")
    assert clinical_record(seg.clinical_tests(masks, perfect, perfect, "logits", ["background", "lesion"], 0.005),
                           0.005, len(masks)).verdict == "passed"
    assert seg.clinical_tests(masks, perfect, empty, "logits", ["background", "lesion"], 0.005)[
        "dice[lesion]"].verdict == "failed"


def test_the_manifests_task_table_and_each_tasks_drift_metrics_agree_with_the_tasks():
    """The names and facts the manifest checks (below the tasks) are the tasks'; every metric a task says it reports
    is a real metric that its comparison computes on real outputs, and its default budget bounds only those."""
    from edgemed.detection import Detections
    from edgemed.gate.verdict import default_budget
    from edgemed.measures.comparison import METRICS
    from edgemed.task_names import TASK_FACTS, TASK_NAMES

    assert tuple(TASKS) == TASK_NAMES
    data = np.load(CALIBRATION / "busi_verdict540.npz")
    masks = data["masks"][:8].astype(np.float32)
    maps = np.stack([1 - masks, masks], 1) * 8 - 4  # (8, 2, 128, 128) logits of the real masks
    logits = np.eye(2, dtype=np.float32)[np.load(CALIBRATION / "breastmnist_train.npz")["labels"].ravel()[:20]]
    boxes = [Detections(np.array([[4, 4, 60, 60]], np.float32), np.array([0.9], np.float32), np.zeros(1, np.int64))
             for _ in range(4)]
    for name, outputs in (("classification", logits), ("segmentation", maps), ("detection", boxes)):
        task = TASKS[name]
        assert task.explainable == TASK_FACTS[name].explainable
        assert set(task.drift_metrics) <= set(METRICS), name
        assert {b.metric for b in default_budget(name).terms} <= set(task.drift_metrics), name
        assert set(task.compare(outputs, outputs, "logits", None).values) == set(task.drift_metrics), name


# Issue 19 counts code that names a task outside the seam (task == ..., the literals): 165 such lines before the
# seam, 111 after its first step, 29 with conversion, bench, DICOM SR, occlusion, samples and input kinds asking too,
# none once the manifest's vocabulary, results, the metrics table, the Triton steps and the benchmarks asked. Only
# the registries name tasks and input kinds: edgemed.tasks, edgemed.task_names, edgemed.input_kinds. A call that
# passes a task by name (``convert(..., task="segmentation")``, the public API) is not a branch.
REGISTRIES = ("edge/tasks/", "edge/task_names.py", "edge/input_kinds.py")
BRANCH = re.compile(r'(task|input_kind|kind\.name)\)? ?[!=]= ["\']|task in \(|[!=]= "(signal|image)"'
                    r'|(?<!task=)"(detection|segmentation|classification)"')


def test_only_the_registries_branch_on_a_task_or_input_kind_name():
    files = subprocess.run(["git", "ls-files", "edge/*.py", "converters/*.py", "runtimes/*.py", "benchmarks/*.py",
                            "devices/*.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    hits = [f"{f}:{i}" for f in files if not f.startswith(REGISTRIES)
            for i, line in enumerate((ROOT / f).read_text().splitlines(), 1) if BRANCH.search(line)]
    assert not hits, f"{len(hits)} lines branch on a task or input kind name: ask edgemed.tasks.task_named(name) " \
                     f"or edgemed.input_kinds.input_kind(name) instead: {', '.join(hits[:8])}"


def test_conversion_asks_the_task_and_refuses_what_it_would_ignore():
    """Convert's checks come from the task: another task's options are refused in one line (they would be silently
    ignored), a signal input only where the task reads one, --explain only for image classifiers; the output's
    labels and postprocessing are the task's."""
    from pathlib import Path

    from edgemed.converters.options import GROUPS, ConvertOptions
    from edgemed.errors import OptionError

    common = {"model": Path("m.pt"), "out": Path("o"), "input_shape": (1, 1, 64, 64)}
    assert "detector" in GROUPS  # the detector's options are its task's group
    with pytest.raises(OptionError, match="--score-threshold: options that apply to detectors, not to segmentation"):
        ConvertOptions(task="segmentation", score_threshold=0.5, **common)
    with pytest.raises(OptionError, match="--nms: options that apply to detectors"):
        ConvertOptions(task="classification", nms="graph", **common)
    assert ConvertOptions(task="detection", score_threshold=0.5, **common).score_threshold == 0.5
    with pytest.raises(OptionError, match="--input-kind signal supports classification, not segmentation"):
        ConvertOptions(task="segmentation", input_kind="signal", **{**common, "input_shape": (1, 1, 180)})
    with pytest.raises(OptionError, match="explains image classifiers, not image detection"):
        ConvertOptions(task="detection", explain="cam", **common)

    cls, seg = task_named("classification"), task_named("segmentation")
    logits = np.zeros((1, 2), np.float32)
    assert cls.output_labels(logits, None) == ["0", "1"]
    assert cls.output_labels(logits, ("malignant", "benign")) == ["malignant", "benign"]
    with pytest.raises(OptionError, match="--labels names 3 classes but the model outputs 2"):
        cls.output_labels(logits, ("a", "b", "c"))
    with pytest.raises(OptionError, match="a classifier should output"):
        cls.output_labels(np.zeros((1, 2, 8, 8), np.float32), None)
    assert seg.output_labels(np.zeros((1, 2, 8, 8), np.float32), None) == ["background", "class1"]
    assert cls.postprocess(logits).decision == "argmax" and cls.postprocess(logits).resize_to_input is None
    assert seg.postprocess(np.zeros((1, 1, 8, 8), np.float32)).activation == "sigmoid"


def test_bench_figures_and_worst_cases_come_from_the_task_on_real_masks():
    """Segmentation's truth report, per-case scores and worst cases on real BUSI masks: a prediction equal to the
    truth scores 1 and is never among the worst; an erased mask scores 0 where there is a lesion, and leads."""
    from types import SimpleNamespace

    verdict = np.load(CALIBRATION / "busi_verdict540.npz")
    masks = [m.astype(np.uint8) for m in verdict["masks"]]
    truth = [m for m in masks if m.any()][:30] + [m for m in masks if not m.any()][:10]  # lesions and normal scans
    seg = task_named("segmentation")
    labels = ["background", "lesion"]
    same = [SimpleNamespace(mask=m) for m in truth]
    erased = [SimpleNamespace(mask=np.zeros_like(m)) for m in truth]
    assert np.all(seg.truth_per_case(truth, same, labels) == 1.0)
    scores = seg.truth_per_case(truth, erased, labels)
    lesions = [i for i, m in enumerate(truth) if m.any()]
    assert lesions and np.all(scores[lesions] == 0.0)
    assert seg.worst_vs_truth(truth, same, labels) == []
    worst = seg.worst_vs_truth(truth, erased, labels)
    assert worst and all(i in lesions for i, _ in worst) and "Dice vs ground truth 0.000" in worst[0][1]
    report = seg.truth_report(truth, erased, labels, None)
    # 30 lesions erased score 0, 10 normal scans left empty score 1: mean 0.25 over the 40, with its bounds
    assert seg.truth_summary(report).startswith("lesion dice 0.250 [") and seg.truth_summary(report).endswith("n=40")
