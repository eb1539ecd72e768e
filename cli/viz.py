"""`wtours viz`."""

from __future__ import annotations

import click

from wtours.cli.common import root_option, say, verbosity_options
from wtours.config import click_options
from wtours.errors import UsageError
from wtours.viz.config import VizConfig


def _heads(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(part) for part in value.split(","))
    except ValueError as e:
        raise UsageError(f"--heads {value!r}", "a comma-separated list of head numbers, e.g. 0,2,5") from e


@click.command("viz")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--shards", "shards", multiple=True, required=True, metavar="SPEC",
              help="Shards to take clips from: slug, path pattern, http(s):// or hf:// pattern; repeatable.")
@root_option
@click_options(VizConfig, only=("clips", "frames", "stride", "seed", "device"))
@click.option("--heads", metavar="H,H,H", help="Discovery heads (K = their number). Default: drawn with --seed.")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default: CHECKPOINT's folder/viz).")
@verbosity_options
def viz(checkpoint, shards, root, clips, frames, stride, heads, seed, device, out) -> None:
    """Pictures of what a checkpoint's teacher tracks: a PNG grid and a GIF per clip, and index.json.

    Grid rows are the clip's frames; columns are the frame, the [CLS] attention of each head of the
    last block (* marks the discovery heads), and each of the K tracked objects' binary masks in its
    own colour. The GIF animates the frame and the K masks. Uses the trainer's own tracker on the
    unaugmented frames (short side to 224, centre crop 224). Details: docs/eval.md.

    \b
    Examples:
      wtours viz runs/venice/checkpoint.pth --shards venice
      wtours viz runs/venice/checkpoint.pth --shards venice --clips 8 --frames 32 --stride 0.5 --out figs
      wtours viz dora_vits16.pth --shards /data/shards/venice --heads 0,2,5 --device cuda
    """
    from pathlib import Path

    from wtours.viz import visualise

    config = VizConfig(clips=clips, frames=frames, stride=stride, heads=_heads(heads), seed=seed, device=device)
    folder = Path(out) if out else Path(checkpoint).parent / "viz"
    index = visualise(checkpoint, list(shards), folder, config, root=root, say=say)
    click.echo(f"wrote {len(index['clips'])} clip pictures (heads {index['heads']}) to {folder}")
