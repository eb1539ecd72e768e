"""`wtours inspect`."""

from __future__ import annotations

import json

import click

from wtours.cli.common import root_option
from wtours.clips.epoch import ClipConfig
from wtours.clips.inspect import describe, format_description
from wtours.clips.spec import resolve, shard_sets


@click.command("inspect")
@click.argument("specs", nargs=-1, required=True)
@root_option
@click.option("--clip-frames", default=8, show_default=True, help="Frames per clip (T).")
@click.option("--clip-stride", default=1.0, show_default=True, help="Seconds between a clip's frames.")
@click.option("--clips-per-shard", type=int, help="A random subset of clips per shard and epoch.")
@click.option("--world-size", default=1, show_default=True, type=click.IntRange(min=1),
              help="Training processes (GPUs) the epoch is planned for.")
@click.option("--workers", default=4, show_default=True, type=click.IntRange(min=0),
              help="Data loader processes per GPU, as `wtours train --workers`.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1), help="Clips per process.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def inspect_shards(specs, root, clip_frames, clip_stride, clips_per_shard, world_size, workers, batch_size,
                   as_json) -> None:
    """Show what a shard SPEC holds, how many clips an epoch has, and how many a training run with
    --world-size x --workers data slots at --batch-size reads (the distinct clips plus the padding that
    gives every rank the same number of steps).

    SPEC: a slug under --root, a folder with index.json, a local brace/glob pattern, or an http(s)://
    or hf://datasets/USER/NAME/... pattern; several may be given (or joined with '::').

    \b
    Examples:
      wtours inspect venice
      wtours inspect '/data/shards/venice/venice-{000000..000004}.tar' --clip-frames 4
      wtours inspect hf://datasets/me/wtours/venice/index.json --json
      wtours inspect venice --world-size 8 --workers 10 --batch-size 32 --json
    """
    shards = resolve(specs, root)
    info = describe(shards, ClipConfig(frames=clip_frames, stride=clip_stride, clips_per_shard=clips_per_shard),
                    world_size=world_size, workers=workers, batch_size=batch_size, sets=shard_sets(specs, root))
    click.echo(json.dumps(info, indent=2) if as_json else format_description(info))
