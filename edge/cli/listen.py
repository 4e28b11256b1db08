"""``edgemed listen``: a DICOM node (C-STORE in, SEG/SR/SC on to a PACS through an outbox)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import accept_option


@click.command()
@click.argument("bundles", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--ae-title", default="EDGEMED", show_default=True, help="This node's AE title.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 for every interface).")
@click.option("--port", default=11112, show_default=True, type=click.IntRange(1, 65535))
@click.option("--send", "send_to", help="Where results go: AE@HOST:PORT (a PACS). Without it they stay in --queue.")
@click.option("--queue", type=click.Path(path_type=Path), default=Path("edgemed-outbox"), show_default=True,
              help="On-disk outbox: results wait here until the destination has confirmed them.")
@click.option("--route", multiple=True, help="MODALITY=BUNDLE_NAME, e.g. US=unet_busi (default: the first bundle "
              "takes every modality).")
@click.option("--dicom", "dicom_kinds", default="seg,sr,sc", show_default=True,
              help="Results to make: seg,sr,sc,saliency.")
@accept_option("Run an artifact with this verdict (never by default).")
def listen(bundles: tuple[Path, ...], ae_title: str, host: str, port: int, send_to: str | None, queue: Path,
           route: tuple[str, ...], dicom_kinds: str, accept: str | None) -> None:
    """A DICOM node: C-STORE in, inference, SEG/SR/SC C-STOREd on (with an outbox that survives a PACS restart)."""
    import logging

    from .. import load
    from ..errors import OptionError
    from ..pacs.node import Destination, Node
    from ..pacs.results import KINDS

    kinds = tuple(k.strip() for k in dicom_kinds.split(","))
    if not kinds or any(k not in KINDS for k in kinds):
        raise OptionError(f"--dicom {dicom_kinds!r}", "use any of seg,sr,sc,saliency")
    destination = Destination.parse(send_to) if send_to else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s edgemed listen: %(message)s")
    for chatty in ("pynetdicom", "highdicom", "pydicom"):  # ~15 INFO lines per image otherwise; warnings still show
        logging.getLogger(chatty).setLevel(logging.WARNING)
    pipes = {}
    opened = [load(b, accept=accept) for b in bundles]
    try:
        by_name = {p.bundle.name: p for p in opened}
        pipes["*"] = opened[0]
        for rule in route:
            modality, _, name = rule.partition("=")
            if name not in by_name or not modality:
                raise OptionError(f"--route {rule!r}: no bundle named {name!r}", f"use one of {', '.join(by_name)}")
            pipes[modality.strip().upper()] = by_name[name]
        Node(pipes, destination, queue, kinds).serve(host, port, ae_title)
    finally:
        for p in opened:
            p.close()
