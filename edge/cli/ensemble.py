"""``edgemed ensemble``: several bundles (and flips) as one model folder."""

from __future__ import annotations

from pathlib import Path

import click

from ..ensemble.manifest import COMBINES


@click.command()
@click.argument("bundles", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="The ensemble folder to write.")
@click.option("--combine", default="mean-logits", show_default=True, type=click.Choice(COMBINES),
              help="Mean of the members' logits, of their class probabilities, or a (weighted) majority vote "
                   "(per pixel for masks).")
@click.option("--weights", help="One weight per member, in order, e.g. 2,1 (default: equal).")
@click.option("--tta", help="Flips every member also sees, e.g. hflip or hflip,vflip (masks are flipped back).")
@click.option("--eval", "eval_path", type=click.Path(path_type=Path),
              help="Frames (folder or .npz) to judge the combination on (default: the first member's stored frames).")
@click.option("--eval-key", help="Array name inside an --eval .npz.")
@click.option("--device", default="cpu", show_default=True, help="Where the combination is judged (as it serves).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def ensemble(bundles: tuple[Path, ...], out: Path, combine: str, weights: str | None, tta: str | None,
             eval_path: Path | None, eval_key: str | None, device: str, force: bool) -> None:
    """Combine bundles of one task and labels (classification or segmentation) into one ensemble folder that
    edgemed.load, predict and sign take like a bundle; each member keeps its preprocessing, artifacts and verdicts."""
    from ..converters.ensemble_build import make_ensemble
    from ..ensemble.opening import open_ensemble
    from ..gate.verdict import summary

    path = make_ensemble(bundles, out, combine=combine, weights=weights, tta=tta, force=force, eval=eval_path,
                         eval_key=eval_key, device=device, log=lambda s: click.echo(s, err=True))
    m = open_ensemble(path).manifest
    click.echo(f"{path}: {len(m.members)} member(s) x {len(m.views)} view(s) = {len(m.members) * len(m.views)} "
               f"runs per frame, combined by {m.combine}")
    for rec in m.members:
        click.echo(f"  {rec.folder} (weight {rec.weight:g})")
    if m.gate is not None:
        click.echo(f"combination ({', '.join(m.gate.served)} on {m.gate.device}) against the FP32 combination: "
                   f"{summary(m.gate.drift)}")
