"""`wtours shard`."""

from __future__ import annotations

import os

import click

from wtours.cli.common import is_quiet, root_option, say, verbosity_options
from wtours.errors import WtoursError
from wtours.layout import Layout
from wtours.manifest import load_manifest
from wtours.shard import params as defaults
from wtours.shard.params import RunOptions, ShardParams, nodes_from_environment
from wtours.shard.run import shard_video


@click.command()
@click.option("--city", "cities", multiple=True, metavar="SLUG", help="Video to shard (corpus slug or added name); repeatable.")
@click.option("--all", "all_videos", is_flag=True, help="Every video registered under the root.")
@root_option
@click.option("--fps", default=defaults.DEFAULT_FPS, show_default=True, type=float, help="Frames sampled per second.")
@click.option("--short-side", default=defaults.DEFAULT_SHORT_SIDE, show_default=True, type=int,
              help="Scale so the short side has this many pixels (never upscales).")
@click.option("--quality", default=defaults.DEFAULT_QUALITY, show_default=True, type=int, help="JPEG quality.")
@click.option("--samples-per-shard", default=defaults.DEFAULT_SAMPLES_PER_SHARD, show_default=True, type=int,
              help="Grid slots per shard: each shard covers samples-per-shard / fps seconds.")
@click.option("--start", default=0.0, show_default=True, type=float, help="First second to shard.")
@click.option("--end", type=float, help="Last second to shard (default: the end).")
@click.option("--blank-threshold", default=defaults.DEFAULT_BLANK_THRESHOLD, show_default=True, type=float,
              help="Frames whose luma standard deviation (0..255) is below this are blank and dropped.")
@click.option("--workers", default=os.cpu_count() or 1, show_default="CPU cores", type=int,
              help="ffmpeg processes decoding segments at once.")
@click.option("--hwaccel", type=click.Choice(["auto", "none", "cuda"]), default="none", show_default=True,
              help="Decode on the GPU with NVDEC (cuda), or when available (auto).")
@click.option("--num-nodes", type=int, help="Machines sharing the work (default: from SLURM, else 1).")
@click.option("--node-rank", type=int, help="This machine's rank, 0..num-nodes-1 (default: from SLURM, else 0).")
@click.option("--finalize", is_flag=True, help="Only write the index, once every segment is done.")
@click.option("--overwrite", is_flag=True, help="Replace shards made with other parameters or another source.")
@verbosity_options
def shard(cities, all_videos, root, fps, short_side, quality, samples_per_shard, start, end, blank_threshold, workers,
          hwaccel, num_nodes, node_rank, finalize, overwrite) -> None:
    """Decode a video with ffmpeg into time-ordered WebDataset shards and index.json.

    Killed at any point, the same command resumes and ends with the bytes of an uninterrupted run,
    whatever --workers and --num-nodes are. Exit status 3: the video is damaged; what decoded is kept.

    \b
    Examples:
      wtours shard --city venice
      wtours shard --city venice --fps 1 --short-side 448 --workers 8
      wtours shard --all --root /data/wtours
      # SLURM array of 4 tasks (ranks come from the environment), then nothing else to do:
      sbatch --array=0-3 --wrap "wtours shard --city venice"
    """
    layout = Layout(root)
    slugs = _slugs(layout, cities, all_videos)
    env_nodes, env_rank = nodes_from_environment()
    params = ShardParams(fps=fps, short_side=short_side, quality=quality, samples_per_shard=samples_per_shard,
                         start=start, end=end, blank_threshold=blank_threshold)
    options = RunOptions(workers=workers, hwaccel=hwaccel, num_nodes=num_nodes or env_nodes,
                         node_rank=node_rank if node_rank is not None else env_rank, overwrite=overwrite,
                         finalize_only=finalize, progress=not is_quiet())
    for slug in slugs:
        summary = shard_video(layout, slug, params, options, say=say)
        if summary.index is not None or summary.segments_done:
            info = layout.read_info(slug)
            click.echo(summary.line(info["probe"]["fps"]))


def _slugs(layout: Layout, cities: tuple[str, ...], all_videos: bool) -> list[str]:
    if all_videos:
        slugs = [s for s in layout.video_slugs() if layout.read_info(s)]
        if not slugs:
            raise WtoursError(f"no videos registered under {layout.root}", "run `wtours download` or `wtours add` first")
        return slugs
    if not cities:
        raise WtoursError("nothing to shard", "name a video with --city SLUG, or pass --all")
    manifest = load_manifest()
    registered = set(layout.video_slugs())
    return [name if name in registered else manifest.resolve(name).slug for name in cities]
