"""`wtours stats` and `wtours stats compare`."""

from __future__ import annotations

from pathlib import Path

import click

from wtours.cli.common import is_quiet, root_option, say, verbosity_options
from wtours.clips.spec import shard_sets
from wtours.layout import Layout
from wtours.selection import video_slugs
from wtours.stats import params as defaults
from wtours.stats.classes import BACKENDS
from wtours.stats.params import AnalysisParams, DetectorParams, StatsConfig
from wtours.stats.run import compare as compare_videos
from wtours.stats.run import stats_video, stats_videos


@click.group(invoke_without_command=True)
@click.option("--city", "cities", multiple=True, metavar="SLUG",
              help="Video to analyse (corpus slug or added name); repeatable.")
@click.option("--all", "all_videos", is_flag=True, help="Every registered video, then the corpus table.")
@click.option("--shards", "shard_specs", multiple=True, metavar="SPEC",
              help="Stream shards instead of the root's: an hf:// or http(s):// pattern (or index.json URL), "
                   "or a local pattern; repeatable.")
@root_option
@click.option("--from", "source", type=click.Choice(defaults.SOURCES), default="shards", show_default=True,
              help="Read the shards (fast), or decode the video itself.")
@click.option("--every", type=float, metavar="SECONDS",
              help="Seconds between analysed frames (default: every shard sample; 0.5 from the video).")
@click.option("--classes/--no-classes", default=True, show_default=True,
              help="Count objects and classes with a detector.")
@click.option("--detector", type=click.Choice(list(BACKENDS)), default=DetectorParams.name, show_default=True,
              help="Detector backend (torchvision, COCO weights).")
@click.option("--weights", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Detector weights file (default: torchvision's cache, downloaded once).")
@click.option("--device", type=click.Choice(defaults.DEVICES), default="auto", show_default=True,
              help="Where the detector runs.")
@click.option("--batch-size", type=int, default=DetectorParams.batch_size, show_default=True,
              help="Frames per detector call.")
@click.option("--score-threshold", type=float, default=DetectorParams.score_threshold, show_default=True,
              help="Detections below this score are not counted.")
@click.option("--top", type=int, default=StatsConfig.top, show_default=True,
              help="Classes in the frequency plot and summary.")
@click.option("--out", type=click.Path(path_type=Path), metavar="DIRECTORY",
              help="Folder for <slug>/ outputs and the corpus table (default: <root>/stats).")
@click.option("--chunk", type=int, default=defaults.DEFAULT_CHUNK, show_default=True,
              help="Frames per resume checkpoint.")
@click.option("--overwrite", is_flag=True, help="Start again instead of continuing an interrupted run.")
@verbosity_options
@click.pass_context
def stats(ctx, cities, all_videos, shard_specs, root, source, every, classes, detector, weights, device, batch_size,
          score_threshold, top, out, chunk, overwrite) -> None:
    """Lightness, scene transitions and class counts of videos: tables and plots under <root>/stats/<slug>/.

    Writes frames.parquet (one row per analysed frame), summary.json and PNG plots; --all also writes
    corpus.csv and corpus.md (one row per video) with comparison plots. A killed run continues where
    it stopped. Measures and thresholds: docs/stats.md.

    \b
    Examples:
      wtours stats --city venice
      wtours stats --city venice --from video --every 1 --no-classes
      wtours stats --all --device cuda --root /data/wtours
      wtours stats compare            # corpus table from the videos analysed so far
      wtours stats --shards hf://datasets/me/wtours/venice/index.json --no-classes
    """
    if ctx.invoked_subcommand is not None:
        return
    layout = Layout(root)
    layout.stats_base(out)  # an --out that is a file fails here, before any work
    config = StatsConfig(
        analysis=AnalysisParams(source=source, every=every), classes=classes,
        detector=DetectorParams(name=detector, score_threshold=score_threshold, device=device, batch_size=batch_size,
                                weights=weights),
        out=out, top=top, chunk=chunk, overwrite=overwrite, progress=not is_quiet())
    if shard_specs:
        for folder, index in shard_sets(shard_specs, root):  # streamed; outputs under <root>/stats/<slug>/
            slug = index.slug
            click.echo(stats_video(layout, slug, config, say=say, remote=(folder, index)).line())
        return
    slugs = video_slugs(layout, cities, all_videos, "analyse")
    stats_videos(layout, slugs, config, corpus=all_videos, say=say, finished=lambda result: click.echo(result.line()))


@stats.command()
@root_option
@click.option("--out", type=click.Path(path_type=Path), metavar="DIRECTORY",
              help="Folder holding the <slug>/ outputs (default: <root>/stats).")
@verbosity_options
def compare(root, out) -> None:
    """Write the corpus table (CSV, Markdown) and comparison plots from the videos analysed so far.

    \b
    Example:
      wtours stats compare --root /data/wtours
    """
    written = compare_videos(Layout(root), out, say=lambda m: None)
    click.echo(f"wrote {', '.join(str(p) for p in written.values())}")
