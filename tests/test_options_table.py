"""One table of convert options: the Python API, the command line and the README's usage blocks agree."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgemed.converters.options import ConvertOptions, cli_fields, option_flag
from edgemed.errors import OptionError
from edgemed.gate.verdict import default_budgets
from edgemed.samples import shipped_model

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_convert_flags() -> set[str]:
    """Every --flag in the README's usage lines of `edgemed convert` (continuation lines included)."""
    flags: set[str] = set()
    lines = README.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.lstrip().startswith("edgemed convert "):
            continue
        block = [line]
        while block[-1].rstrip().endswith("\\"):
            i += 1
            block.append(lines[i])
        flags |= set(re.findall(r"(--[a-z][a-z0-9-]+)", " ".join(block)))
    return flags


def _help_flags() -> set[str]:
    out = subprocess.run([sys.executable, "-m", "edgemed.cli", "convert", "--help"], capture_output=True, text=True,
                         env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}, check=True).stdout
    return set(re.findall(r"^\s+(?:-\w, )?(--[a-z][a-z0-9-]+)", out, flags=re.M))


def test_readme_help_and_table_name_the_same_options():
    table = {option_flag(f) for f in cli_fields()} | {"--out"}
    assert _readme_convert_flags() | {"--out"} == table, "README usage blocks differ from the options table"  # -o
    assert _help_flags() - {"--help"} == table, "edgemed convert --help differs from the options table"


def test_every_python_field_is_on_the_command_line():
    import dataclasses

    off_cli = {f.name for f in dataclasses.fields(ConvertOptions)} - {f.name for f in cli_fields()}
    assert off_cli == {"model", "out"}  # the command's argument and -o


def test_the_help_states_each_task_s_real_default_budget():
    out = subprocess.run([sys.executable, "-m", "edgemed.cli", "convert", "--help"], capture_output=True, text=True,
                         env={"COLUMNS": "400", "PATH": "/usr/bin:/bin"}, check=True).stdout
    flat = " ".join(out.split())
    for task, budget in default_budgets().items():
        assert f"{task}: {budget}" in flat


def test_verdict_options_work_from_the_command_line(tmp_path, breastmnist):
    """--eval, --val, --val-labels, --val-key and --margin reach the gate (the README documents them)."""
    import numpy as np

    weights, card = shipped_model("cnn_breastmnist")
    data = tmp_path / "data.npz"
    np.savez(data, images=breastmnist["train_images"][:200], val_images=breastmnist["val_images"],
             val_labels=breastmnist["val_labels"].ravel())
    ev = tmp_path / "eval.npz"
    np.savez(ev, images=breastmnist["test_images"])
    spec = tmp_path / "spec.json"
    import json

    spec.write_text(json.dumps(card["preprocess"]))
    out = tmp_path / "b"
    proc = subprocess.run([sys.executable, "-m", "edgemed.cli", "convert", str(weights), "-o", str(out),
                           "--task", "classification", "--input-shape", "1x1x28x28", "--arch", "cnn",
                           "--arch-args", json.dumps(card["arch_args"]), "--labels", ",".join(card["labels"]),
                           "--preprocess", str(spec), "--precision", "fp32,fp16", "--calib", str(data),
                           "--eval", str(ev), "--val", str(data), "--val-key", "val_images", "--val-labels", str(data),
                           "--margin", "0.01"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    from edgemed.bundle import Bundle

    b = Bundle.open(out)
    fp16 = b.manifest.artifact("onnxruntime", "fp16")
    assert fp16.drift.cases == 156  # the verdict was taken on --eval
    assert fp16.clinical is not None and fp16.clinical.margin == 0.01 and fp16.clinical.cases == 78


@pytest.mark.parametrize("kw,needle", [
    (dict(margin="0.7"), "--margin 0.7 must be a number in"),
    (dict(max_detections="0"), "--max-detections 0 must be a whole number"),
    (dict(input_kind="audio"), "--input-kind audio is not supported"),
])
def test_bad_strings_from_the_command_line_are_one_line(tmp_path, kw, needle):
    weights, _ = shipped_model("cnn_breastmnist")
    typed = {k: (float(v) if k == "margin" else int(v) if k == "max_detections" else v) for k, v in kw.items()}
    with pytest.raises(OptionError, match=re.escape(needle)):
        ConvertOptions.from_cli(weights, tmp_path / "out", "classification", **typed)
