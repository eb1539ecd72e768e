"""`wtours shard`."""

from __future__ import annotations

import click

from wtours.cli.common import is_quiet, root_option, say, verbosity_options
from wtours.config import WORKERS, Range, click_options, from_command, number_type
from wtours.layout import Layout
from wtours.selection import video_slugs
from wtours.shard.index import planned_settings
from wtours.shard.params import RunOptions, ShardParams, nodes_from_environment
from wtours.shard.run import shard_video
from wtours.system import usable_cpus
from wtours.video import read_video_info

NODES = Range(1, 100_000)  # machines of one sharding job (a SLURM array's tasks)


@click.command()
@click.option("--city", "cities", multiple=True, metavar="SLUG",
              help="Video to shard (corpus slug or added name); repeatable.")
@click.option("--all", "all_videos", is_flag=True, help="Every video registered under the root.")
@root_option
@click_options(ShardParams)
@click.option("--workers", type=number_type(int, WORKERS), show_default="the CPUs this process may use",
              help="ffmpeg processes decoding segments at once (default: this process's CPU affinity, capped "
                   "by SLURM_CPUS_PER_TASK).")
@click.option("--hwaccel", type=click.Choice(["auto", "none", "cuda"]), default="none", show_default=True,
              help="Decode on the GPU with NVDEC (cuda), or when available (auto).")
@click.option("--num-nodes", type=number_type(int, NODES),
              help="Machines sharing the work (default: from SLURM, else 1).")
@click.option("--node-rank", type=number_type(int, Range(0, NODES.high, open_high=True)),
              help="This machine's rank, 0..num-nodes-1 (default: from SLURM, else 0).")
@click.option("--finalize", is_flag=True,
              help="Only write the index, once every segment is done; the settings are the set's own (its "
                   "plan.json), so none need repeating.")
@click.option("--overwrite", is_flag=True, help="Replace shards made with other parameters or another source.")
@verbosity_options
@click.pass_context
def shard(ctx: click.Context, cities, all_videos, root, workers, hwaccel, num_nodes, node_rank, finalize, overwrite,
          **values) -> None:
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
      wtours shard --city venice --finalize   # after such a job: the set's own settings
    """
    layout = Layout(root)
    slugs = video_slugs(layout, cities, all_videos, "shard")
    env_nodes, env_rank = nodes_from_environment()
    options = RunOptions(workers=workers or usable_cpus(), hwaccel=hwaccel, num_nodes=num_nodes or env_nodes,
                         node_rank=node_rank if node_rank is not None else env_rank, overwrite=overwrite,
                         finalize_only=finalize, progress=not is_quiet())
    for slug in slugs:
        planned = planned_settings(layout, slug) if finalize else None  # settings given anyway must match them
        params = from_command(ShardParams, ctx, values, None, (), base=planned)
        summary = shard_video(layout, slug, params, options, say=say)
        if summary.index is not None or summary.segments_done:
            info = read_video_info(layout, slug)
            click.echo(summary.line(info.probe.fps if info else 0.0))
