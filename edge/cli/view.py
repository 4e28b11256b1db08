"""``edgemed view``: a local page to drop an image on and see the answer, its artifact and verdict."""

from __future__ import annotations

from pathlib import Path

import click

from .options import accept_option


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (keep it local: no login).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@accept_option("Run an artifact with this verdict (never by default).")
def view(bundle: Path, host: str, port: int, accept: str | None) -> None:
    """A local page: drop an image, see the mask/boxes/label, the artifact and its verdict; DICOM SEG/SR to download."""
    from .. import load
    from ..serve.view import check_viewable
    from ..serve.view import serve as serve_page

    with load(bundle, accept=accept) as pipe:
        check_viewable(pipe)
        click.echo(f"edgemed view: http://{host}:{port}/ ({pipe.bundle.name}, {pipe.artifact.key}, "
                   f"{pipe.artifact.verdict})")
        serve_page(pipe, host, port)
