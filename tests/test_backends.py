"""The backend table is the one declaration every part reads: these check that what reads it agrees with it and
that each entry points at code that exists."""

from __future__ import annotations

import typing

import click
import pytest

from edgemed import backends
from edgemed.backends import BACKEND_NAMES, BACKENDS, PRECISIONS, TARGETS, by_target
from edgemed.errors import OptionError
from edgemed.runtimes.base import Engine


def test_manifest_and_profiles_speak_the_tables_words():
    from edgemed import manifest
    from edgemed.devices import profiles

    assert typing.get_args(backends.Backend) == BACKEND_NAMES and typing.get_args(backends.Precision) == PRECISIONS
    assert manifest.Backend is backends.Backend and manifest.Precision is backends.Precision
    assert profiles.Backend is backends.Backend
    for profile in profiles.load_profiles().values():
        for name, precision in profile.preference:
            assert precision in BACKENDS[name].precisions
        # every backend gets a device word on every profile, from the table's rule
        assert all(isinstance(profile.engine_device(n), str) and profile.engine_device(n) for n in BACKEND_NAMES)


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_each_entry_points_at_real_code(name):
    info = BACKENDS[name]
    assert by_target(info.target) is info
    if info.installed():  # TensorRT's libraries cannot be installed here: its runner is checked where it imports
        assert issubclass(info.engine_class(), Engine)
        assert isinstance(info.installed_version(), str)
    else:
        assert info.installed_version() is None
    assert callable(info.build_function())  # builders import their toolchain lazily, inside the call


def test_cli_choices_come_from_the_table():
    from edgemed.cli import main

    by_command = {name: {p.name: p for p in cmd.params} for name, cmd in main.commands.items()}
    for command in ("predict", "bench"):
        params = by_command[command]
        assert tuple(params["backend"].type.choices) == BACKEND_NAMES
        assert tuple(params["precision"].type.choices) == PRECISIONS
    export = main.commands["export"].commands["triton"]
    choice = next(p for p in export.params if p.name == "backend").type
    assert isinstance(choice, click.Choice)
    assert tuple(choice.choices) == ("python", *(n for n in BACKEND_NAMES if BACKENDS[n].triton is not None))


def test_unknown_names_are_refused_naming_the_known_ones():
    with pytest.raises(OptionError, match="use one of onnxruntime, openvino, tensorrt"):
        backends.backend("onnx")
    with pytest.raises(OptionError, match=", ".join(TARGETS)):
        by_target("onnxruntime")
