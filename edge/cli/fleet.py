"""Fleet commands: ``repo init|refresh|rotate`` and ``publish`` (server side), ``update`` and ``rollback``
(device side), ``sbom``. Each imports tuf or cyclonedx only when it runs."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import click

from ..errors import InputError


def _need(module: str, package: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise InputError(f"this command needs the {package} package", "pip install 'edgemed[fleet]'") from exc


def _expiry(items: tuple[str, ...]):
    from ..fleet.repository import parse_expiry

    return parse_expiry(items)


_KEY = click.Path(path_type=Path, exists=True, dir_okay=False)
_expires_option = click.option("--expires", multiple=True, metavar="ROLE=DURATION",
                               help="Expiry of newly signed metadata, e.g. timestamp=1d, snapshot=30d, targets=180d.")


@click.group()
def repo() -> None:
    """A TUF repository of bundles (a folder any static web server can serve)."""


@repo.command("init")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--root-key", "root_keys", multiple=True, required=True, type=_KEY,
              help="Root private key(s) (edgemed keygen); keep them offline.")
@click.option("--targets-key", "targets_keys", multiple=True, required=True, type=_KEY,
              help="Public key(s) of the publisher (signs each bundle).")
@click.option("--snapshot-key", "snapshot_keys", multiple=True, required=True, type=_KEY,
              help="Public key(s) for snapshot (online).")
@click.option("--timestamp-key", "timestamp_keys", multiple=True, required=True, type=_KEY,
              help="Public key(s) for timestamp (online).")
@click.option("--threshold", "thresholds", multiple=True, metavar="ROLE=N",
              help="Signatures a role needs (default 1 each), e.g. root=2.")
@_expires_option
def repo_init(path: Path, root_keys, targets_keys, snapshot_keys, timestamp_keys, thresholds, expires) -> None:
    """Create root.json: which keys may sign for each role. Devices are provisioned with this file."""
    _need("tuf", "tuf")
    from ..errors import OptionError
    from ..fleet.repository import init_repository

    parsed = {}
    for item in thresholds:
        role, _, n = item.partition("=")
        if not n.isdigit():
            raise OptionError(f"--threshold {item!r}", "write ROLE=N, e.g. root=2")
        parsed[role.strip()] = int(n)
    root = init_repository(path, list(root_keys), {"targets": list(targets_keys), "snapshot": list(snapshot_keys),
                                                   "timestamp": list(timestamp_keys)}, parsed, _expiry(expires))
    click.echo(f"{root} (give this file to each device once: edgemed update --root)")


@repo.command("refresh")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--key", "keys", multiple=True, required=True, type=_KEY, help="Snapshot and timestamp keys.")
@_expires_option
def repo_refresh(path: Path, keys, expires) -> None:
    """Re-sign snapshot and timestamp with fresh expiry (run it periodically, e.g. daily from cron)."""
    _need("tuf", "tuf")
    from ..fleet.repository import refresh

    click.echo(f"timestamp version {refresh(path, list(keys), _expiry(expires))}")


@repo.command("rotate")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--role", required=True, type=click.Choice(["root", "targets", "snapshot", "timestamp"]))
@click.option("--add", "add", multiple=True, type=_KEY, help="Key to give the role (public or private file).")
@click.option("--remove", "remove", multiple=True, type=_KEY, help="Key to take from the role.")
@click.option("--threshold", type=click.IntRange(1), help="The role's new threshold.")
@click.option("--key", "keys", multiple=True, required=True, type=_KEY,
              help="Signing keys: the current root keys (and the new ones for a root rotation), and the new keys "
                   "of the rotated role and of those re-signed after it.")
@_expires_option
def repo_rotate(path: Path, role: str, add, remove, threshold, keys, expires) -> None:
    """Replace a role's keys in a new root version and re-sign what that role signs."""
    _need("tuf", "tuf")
    from ..fleet.repository import rotate

    version = rotate(path, role, list(add), list(remove), list(keys), threshold, _expiry(expires))
    click.echo(f"root version {version}: {role} keys rotated")


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--repo", "repo_path", required=True, type=click.Path(path_type=Path), help="TUF repository folder.")
@click.option("--key", "keys", multiple=True, required=True, type=_KEY,
              help="Private keys for targets, snapshot and timestamp (repeat; each signs the roles root gives it).")
@click.option("--version", "version", required=True, help="The model version, e.g. 1.2.0 (dotted integers).")
@_expires_option
def publish(bundle: Path, repo_path: Path, keys, version: str, expires) -> None:
    """Add a bundle to a TUF repository as a signed target (hashes, length, model metadata)."""
    _need("tuf", "tuf")
    from ..fleet.repository import publish as run

    target = run(bundle, repo_path, list(keys), version, _expiry(expires))
    info = target.custom["edgemed"]
    click.echo(f"published {target.path}: {info['model']} {info['version']}, {target.length} bytes, "
               f"sha256 {target.hashes['sha256'][:16]}..., verdicts "
               + ", ".join(f"{k} {v}" for k, v in info["verdicts"].items()))


@click.command()
@click.option("--repo", "url", required=True, help="Repository URL (serving metadata/ and targets/).")
@click.option("--into", required=True, type=click.Path(path_type=Path), help="The device folder.")
@click.option("--root", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="The repository's root.json, obtained out of band (first update only).")
@click.option("--model", help="Which model, when the repository offers several (first update only).")
@click.option("--version", "version", help="Install this version rather than the newest.")
@click.option("--canary", type=click.Path(path_type=Path, exists=True),
              help="Reference frames to keep on the device (folder or .npz) and check every new version on.")
@click.option("--allow-downgrade", is_flag=True, help="Install a version older than the serving one.")
@click.option("--trial", default=20, show_default=True, type=click.IntRange(0),
              help="Predictions the new version must serve without failing before it is committed "
                   "(edgemed.fleet.watch rolls back otherwise).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--backend", help="The backend the runtime loads with (the canary checks that artifact).")
@click.option("--precision", help="The precision the runtime loads with (the canary checks that artifact).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def update(url: str, into: Path, root, model, version, canary, allow_downgrade: bool, trial: int, device: str,
           backend: str | None, precision: str | None, as_json: bool) -> None:
    """Fetch the newest bundle with TUF, install it beside the current one, canary, then switch (or refuse)."""
    _need("tuf", "tuf")
    from ..fleet.update import update as run

    result = run(url, into, root, model, version, canary, allow_downgrade, trial, device,
                 echo=(lambda s: None) if as_json else (lambda s: click.echo(s, err=True)), backend=backend,
                 precision=precision)
    if as_json:
        click.echo(json.dumps({"model": result.model, "installed": result.installed, "serving": result.serving,
                               "changed": result.changed, "recovered": result.recovered,
                               "canary": result.canary.lines if result.canary else None,
                               "figures": result.canary.figures if result.canary else None}, indent=2))
    else:
        click.echo(result.message)


@click.command()
@click.option("--into", required=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="The device folder.")
@click.option("--reason", default="asked by the operator", show_default=True)
def rollback(into: Path, reason: str) -> None:
    """Serve the previous version again (it stays refused by later updates until a newer one is published)."""
    from ..fleet.update import rollback as run

    click.echo(f"serving {run(into, reason)} again")


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Write here (default: stdout).")
@click.option("--version", "version", help="The model version to record (as published).")
def sbom(bundle: Path, out: Path | None, version: str | None) -> None:
    """A CycloneDX 1.6 ML-BOM of a bundle: model card, every artifact's hash, the runtime libraries."""
    _need("cyclonedx", "cyclonedx-python-lib")
    from ..fleet.sbom import write_sbom

    text = write_sbom(bundle, out, version)
    click.echo(str(out) if out is not None else text)


def register(main: click.Group) -> None:
    """Add repo, publish, update, rollback and sbom to the CLI."""
    main.add_command(repo)
    main.add_command(publish)
    main.add_command(update)
    main.add_command(rollback)
    main.add_command(sbom)
