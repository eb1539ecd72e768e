"""`wtours inspect`."""

from __future__ import annotations

import json

import click

from wtours.cli.common import root_option
from wtours.clips.epoch import ClipConfig
from wtours.clips.inspect import describe, format_description
from wtours.clips.spec import resolve_sets
from wtours.config import Range, number_type, option_type
from wtours.layout import Layout
from wtours.train.config import TrainConfig  # inspect plans the epochs `wtours train` reads: the same ranges


@click.command("inspect")
@click.argument("specs", nargs=-1, required=True)
@root_option
@click.option("--clip-frames", default=8, show_default=True, type=option_type(TrainConfig, "clip_frames"),
              help="Frames per clip (T).")
@click.option("--clip-stride", default=1.0, show_default=True, type=option_type(TrainConfig, "clip_stride"),
              help="Seconds between a clip's frames.")
@click.option("--clips-per-shard", type=option_type(TrainConfig, "clips_per_shard"),
              help="A random subset of clips per shard and epoch.")
@click.option("--world-size", default=1, show_default=True, type=number_type(int, Range(1, 1 << 20)),
              help="Training processes (GPUs) the epoch is planned for.")
@click.option("--workers", default=4, show_default=True, type=option_type(TrainConfig, "workers"),
              help="Data loader processes per GPU, as `wtours train --workers`.")
@click.option("--batch-size", default=16, show_default=True, type=option_type(TrainConfig, "batch_size"),
              help="Clips per process.")
@click.option("--where", metavar="EXPR",
              help="Also list the frames meeting a condition on the columns of each video's frames.parquet "
                   "(`wtours stats`), e.g. 'lightness > 30 and not cut': their sample keys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--grid", nargs=2, type=(number_type(int, Range(1, 64)), click.Path(dir_okay=False)),
              metavar="N OUT.png", help="Also draw N clips of the first batch and the multi-crop views the trainer "
                                        "makes of them into OUT.png (needs wtours[train]).")
@click.option("--n-local", default=6, show_default=True, type=number_type(int, Range(0, 64)),
              help="Local views per clip drawn by --grid (as `wtours train --n-local`).")
def inspect_shards(specs, root, clip_frames, clip_stride, clips_per_shard, world_size, workers, batch_size,
                   where, as_json, grid, n_local) -> None:
    """Show what a shard SPEC holds, how many clips an epoch has, and how many a training run with
    --world-size x --workers data slots at --batch-size reads (the distinct clips plus the padding that
    gives every rank the same number of steps). Per video: gaps between the shards, and the blank
    stretches `wtours shard` dropped with their times (a blank tail named as such). --grid N OUT.png
    draws N clips as the trainer reads them: their frames, then the global and local views.

    SPEC: a slug under --root, a folder with index.json (./NAME for one named like a video), a local
    brace/glob pattern, an http(s)://, hf://datasets/USER/NAME/..., s3://, gs:// or file:// pattern
    (s3:// needs s3fs, gs:// gcsfs), or
    'pipe:COMMAND' (a shell command per shard, braces expanded; its index.json is read beside the
    command's .tar argument, and inspect never runs the command); several may be given (or joined
    with '::').

    \b
    Examples:
      wtours inspect venice
      wtours inspect '/data/shards/venice/venice-{000000..000004}.tar' --clip-frames 4
      wtours inspect hf://datasets/me/wtours/venice/index.json --json
      wtours inspect 's3://bucket/wtours/venice/venice-{000000..000004}.tar'
      wtours inspect 'pipe:cat /data/shards/venice/venice-{000000..000004}.tar'
      wtours inspect venice --world-size 8 --workers 10 --batch-size 32 --json
      wtours inspect venice --grid 4 venice-views.png
      wtours inspect venice --where 'lightness > 30 and shot == 2' --json
    """
    sets = resolve_sets(specs, root)
    shards = [ref for found in sets for ref in found.refs]
    folders = {found.folder: found.index for found in sets}
    info = describe(shards, ClipConfig(frames=clip_frames, stride=clip_stride, clips_per_shard=clips_per_shard),
                    world_size=world_size, workers=workers, batch_size=batch_size, sets=list(folders.items()))
    lines: list[str] = []
    if where is not None:
        info["where"], lines = frames_where(Layout(root), [index.slug for index in folders.values()], where)
    click.echo(json.dumps(info, indent=2) if as_json else "\n".join([format_description(info), *lines]))
    if grid:
        _draw_grid(shards, grid, ClipConfig(frames=clip_frames, stride=clip_stride, clips_per_shard=clips_per_shard),
                   n_local)


def _draw_grid(shards, grid: tuple[int, str], clip: ClipConfig, n_local: int) -> None:
    """--grid N OUT.png: the trainer's view of N clips (wtours/clips/views.py; torch and OpenCV load only here)."""
    from pathlib import Path

    from wtours.clips.augment import MultiCropConfig
    from wtours.clips.views import write_grid

    clips, out = grid
    keys = write_grid(shards, clips, Path(out), clip, MultiCropConfig(n_local=n_local))
    click.echo(f"wrote {out}: {len(keys)} clip(s) ({', '.join(keys)}), their frames and multi-crop views", err=True)


def frames_where(layout: Layout, slugs: list[str], expression: str) -> tuple[dict, list[str]]:
    """--where: per video, the keys of the frames meeting `expression` (JSON), and a line each."""
    from wtours.stats.where import select_frames

    chosen = [select_frames(layout, slug, expression) for slug in dict.fromkeys(slugs)]
    report = {"expression": expression,
              "videos": {c.slug: {"frames": c.frames, "matching": len(c.keys), "keys": list(c.keys)} for c in chosen}}
    lines = [f"where {expression}: {c.slug}: {len(c.keys)} of {c.frames} analysed frames"
             + (f" ({c.keys[0]} .. {c.keys[-1]}; --json lists them)" if c.keys else "") for c in chosen]
    return report, lines
