"""Trust commands: ``verify`` (hashes, signature, reproduction on this device), ``certify`` (a site's own
verdict), ``keygen`` and ``sign``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import EdgemedError
from .base import write_json


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--device", default="cpu", show_default=True)
@click.option("--pubkey", type=click.Path(path_type=Path), help="Also require a valid Ed25519 signature by this key.")
@click.option("--certifier", "certifiers", multiple=True, type=click.Path(path_type=Path),
              help="Also trust certifications signed by this public key (repeatable).")
def verify(bundle: Path, device: str, pubkey: Path | None, certifiers: tuple[Path, ...]) -> None:
    """Check signature (with --pubkey), hashes, which verdict is trusted and who signed it, and that every passed
    artifact reproduces on this device the answers it gave at conversion on the bundle's reference probes."""
    from ..bundle import Bundle
    from ..device_pointer import is_device, serving_bundle
    from ..ensemble.files import is_ensemble
    from ..gate.verdict import summary
    from ..gate.verify import verify_artifact
    from ..pipeline import open_pipeline

    if is_device(bundle):  # a device folder (edgemed update --into): the version it serves
        bundle = serving_bundle(bundle)
    if pubkey is not None:
        from ..signing import verify_signature

        click.echo(f"signature ok: signed by key {verify_signature(bundle, pubkey)}; no file added, removed or changed")
    if is_ensemble(bundle):  # every member, as a bundle of its own (the signature above covers them all)
        from ..ensemble.opening import open_ensemble

        members = open_ensemble(bundle, require_signature=pubkey, certifiers=certifiers).members
        click.echo(f"ensemble: {len(members)} member(s), every member file matches its hash")
    else:
        members = [Bundle.open(bundle, require_signature=pubkey, certifiers=certifiers)]
    failures = 0
    for b in members:
        where = f"{b.path.name}/" if is_ensemble(bundle) else ""
        for note in b.certification_notes:
            click.echo(f"certification {where}{note}")
        for art in b.artifacts:
            if art.verdict != "passed":
                click.echo(f"{where}{art.file} {art.key}: {art.verdict} ({_trusted_verdict(art)}); not checked "
                           "(never selected)")
                continue
            with open_pipeline(b, device=device, backend=art.backend, precision=art.precision) as pipe:
                checked = verify_artifact(pipe)
            failures += not checked.passed
            click.echo(f"{where}{art.file} {art.key}: hashes ok; on this device: {summary(checked)}")
            click.echo(f"  verdict passed, {_trusted_verdict(art)}")
    if failures:
        raise EdgemedError(f"{failures} artifact(s) do not reproduce their conversion-time answers on this device",
                           "rebuild the bundle on this device or investigate the backend version")


def _trusted_verdict(art) -> str:
    """Which verdict holds for an artifact, and on what: conversion's, or a certification (who signed it)."""
    where = art.drift.evaluated_on or "conversion"
    if "certification" in where:
        return f"from {where}"
    return f"from conversion ({art.drift.cases} cases, budget {art.drift.budget})"


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--eval", "data", required=True, type=click.Path(path_type=Path),
              help="The site's images (folder or .npz) or signal windows (.npz), unlabelled: every case counts.")
@click.option("--eval-key", "data_key", help="Array name inside an --eval .npz.")
@click.option("--val", type=click.Path(path_type=Path), help="Labelled images: the clinical gate against FP32.")
@click.option("--val-labels", type=click.Path(path_type=Path), help="Labels for --val (CSV, mask folder, .npz).")
@click.option("--val-key", help="Array name inside a --val .npz.")
@click.option("--drift-budget", "budget", help="The budget to judge by (default: each artifact's conversion budget; "
              "FP32 artifacts: parity, else the task's default).")
@click.option("--margin", default=0.005, show_default=True, type=click.FloatRange(0, 0.5, min_open=True, max_open=True),
              help="Non-inferiority margin of the clinical gate.")
@click.option("--device", default="cpu", show_default=True, help="Where the artifacts run (and are judged).")
@click.option("--threads", type=click.IntRange(1, 256))
@click.option("--key", type=click.Path(path_type=Path), help="Sign the certification with this Ed25519 private key.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write the record as JSON here.")
def certify(bundle: Path, json_out: Path | None, **kw) -> None:
    """Judge every artifact again on a site's own data, where it runs, without rebuilding: an uncertified artifact
    becomes passed or failed. The verdict is a new record in BUNDLE/certifications/ (signed with --key); no
    artifact is touched."""
    from ..converters.certify import certify as run_certify

    path, record = run_certify(bundle, log=lambda s: click.echo(s, err=True), **kw)
    from ..gate.verdict import summary

    for a in record.artifacts:
        click.echo(f"{a.file} {a.backend}/{a.precision}: {a.verdict}: {summary(a.drift)}")
        for name, est in a.drift.metrics.items():
            if name.startswith("class_agreement["):
                low = f" (95% lower bound {est.low:.4f})" if est.low is not None else ""
                click.echo(f"  {name} {est.value:.4f}{low} on {est.cases} {record.data.unit}")
    signed = f", signed by key {record.signature.key_fingerprint}" if record.signature else ", unsigned"
    click.echo(f"certification written: {path}{signed}")
    if json_out is not None:
        write_json(json_out, json.loads(record.to_json()))


@click.command()
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Private key file to create.")
def keygen(out: Path) -> None:
    """Create an Ed25519 key pair (OUT, mode 0600, and OUT.pub) for signing bundles."""
    from ..signing_keys import generate_keypair

    if out.exists():
        raise EdgemedError(f"{out} already exists", "choose another path; edgemed never overwrites a key")
    click.echo(str(generate_keypair(out)))


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--key", required=True, type=click.Path(path_type=Path), help="Ed25519 private key (PEM).")
def sign(bundle: Path, key: Path) -> None:
    """Sign every file of a verified bundle (writes edgemed.sig)."""
    from ..signing import sign_bundle

    click.echo(str(sign_bundle(bundle, key)))
