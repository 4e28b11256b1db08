"""Command-line options several commands share, declared once and derived from the tables they choose from
(:data:`edgemed.backends.BACKENDS`, the verdicts), so a new backend or verdict reaches every command."""

from __future__ import annotations

from collections.abc import Callable

import click

from ..backends import BACKEND_NAMES, PRECISIONS
from ..selection import ACCEPTABLE


def backend_option(help: str = "Run this backend's artifact (default: the device profile's choice).") -> Callable:
    return click.option("--backend", type=click.Choice(BACKEND_NAMES), help=help)


def precision_option(help: str = "Run this precision's artifact (default: the device profile's choice).") -> Callable:
    return click.option("--precision", type=click.Choice(PRECISIONS), help=help)


def accept_option(help: str) -> Callable:
    """``--accept VERDICT``: an unproven artifact runs only when named and accepted (``load(accept=)``)."""
    return click.option("--accept", type=click.Choice(ACCEPTABLE), help=help)


def convert_options(command: Callable) -> Callable:
    """``convert``'s options, generated from the options table (:mod:`edgemed.converters.options`)."""
    from edgemed.converters.options import click_options

    return click_options(command)
