"""``edgemed convert``: a trained model in, a verified bundle out; its options come from the options table."""

from __future__ import annotations

from pathlib import Path

import click

from .options import convert_options


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Bundle directory to write.")
@convert_options
def convert(model: Path, out: Path, task: str, **kw) -> None:
    """Turn a trained model into a verified bundle."""
    from edgemed.converters.convert import run
    from edgemed.converters.options import ConvertOptions

    run(ConvertOptions.from_cli(model, out, task, **kw), log=lambda s: click.echo(s, err=True))
    click.echo(str(out))
