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
    members = [n for n in vars(Task) if not n.startswith("_")] + list(Task.__annotations__)
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


# Issue 19 counts code that branches on a task's name (task == ..., the literals). Before the seam: 165 such lines;
# with it: 111 so far. This keeps the count from growing back; it goes to 0 when the seam is complete.
TASK_BRANCHES_NOW = 111
BRANCH = re.compile(r'task ==|task !=|input_kind ==|input_kind !=|task in \(|"(detection|segmentation|classification)"')


def test_task_name_branches_outside_the_task_package_do_not_grow():
    files = subprocess.run(["git", "ls-files", "edge/*.py", "converters/*.py", "runtimes/*.py", "benchmarks/*.py",
                            "devices/*.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    hits = [f"{f}:{i}" for f in files if not f.startswith("edge/tasks/")
            for i, line in enumerate((ROOT / f).read_text().splitlines(), 1) if BRANCH.search(line)]
    assert len(hits) <= TASK_BRANCHES_NOW, f"{len(hits)} task-name branches (was {TASK_BRANCHES_NOW}): ask " \
                                           "edgemed.tasks.task_named(name) instead; new ones include " + \
                                           ", ".join(hits[-5:])
