"""The ``edgemed`` command line, one module per job: convert, predict, bench and report, trust (verify,
certify, keygen, sign), devices, serve and export, listen, view, demo; the fleet's commands live with the fleet
and ``ensemble`` with the ensembles.

Every failure a user can cause ends as one line on stderr and a non-zero exit status (:mod:`.base`); the JSON
written by ``--json`` is the stable, documented interface for scripts. Each command imports its work inside its
body, so ``edgemed --help`` loads neither a backend nor torch.
"""

from __future__ import annotations

import click

from .base import EXIT_INTERNAL, EXIT_USER_ERROR, Group
from .bench import bench
from .convert import convert
from .demo import demo
from .devices import devices
from .ensemble import ensemble
from .fleet import register as register_fleet
from .listen import listen
from .predict import predict
from .report import report
from .serve import export, serve
from .trust import certify, keygen, sign, verify
from .view import view

__all__ = ["EXIT_INTERNAL", "EXIT_USER_ERROR", "main"]


@click.group(cls=Group)
@click.version_option(package_name="edgemed")
def main() -> None:
    """edgemed: convert, verify, run and benchmark medical-imaging models on edge devices."""


for command in (convert, predict, bench, verify, certify, keygen, sign, report, devices, demo, export, serve, listen,
                view, ensemble):
    main.add_command(command)
register_fleet(main)  # publish, update, rollback, sbom, repo
