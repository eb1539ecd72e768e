"""`wtours stats` and `wtours stats compare`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from wtours.cli.common import is_quiet, root_option, say, verbosity_options
from wtours.clips.spec import ShardSet, resolve_sets
from wtours.config import click_options, from_command
from wtours.errors import UsageError
from wtours.layout import Layout
from wtours.selection import video_slugs
from wtours.stats.params import StatsConfig
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
@click_options(StatsConfig, skip=("progress",))
@verbosity_options
@click.pass_context
def stats(ctx, cities, all_videos, shard_specs, root, **values) -> None:
    """Lightness, scene transitions and class counts of videos: tables and plots under <root>/stats/<slug>/.

    Writes frames.parquet (one row per analysed frame), summary.json and PNG plots; --all also writes
    corpus.csv and corpus.md (one row per video) with comparison plots. A killed run continues where
    it stopped. Measures and thresholds: docs/stats.md.

    \b
    Examples:
      wtours stats --city venice
      wtours stats --city venice --from video --every 1 --no-classes
      wtours stats --all --device cuda --root /data/wtours
      wtours stats --all --device cuda --detector owlv2   # LVIS v1's 1,203 classes (extra: owlv2)
      wtours stats compare            # corpus table from the videos analysed so far
      wtours stats --shards hf://datasets/me/wtours/venice/index.json --no-classes
    """
    if ctx.invoked_subcommand is not None:
        return
    layout = Layout(root)
    config = replace(from_command(StatsConfig, ctx, values, None, ()), progress=not is_quiet())
    layout.stats_base(config.out)  # an --out that is a file fails here, before any work
    if shard_specs:
        if cities or all_videos or config.analysis.source != "shards":
            given = ", ".join(o for o, on in (("--city", cities), ("--all", all_videos),
                                               ("--from video", config.analysis.source != "shards")) if on)
            raise UsageError(f"--shards names the videos to analyse, and {given} cannot be combined with it",
                             "pass either --shards SPEC, or --city/--all (with --from) for the root's videos")
        for found in whole_sets(resolve_sets(shard_specs, root)):  # streamed; outputs under <root>/stats/<slug>/
            click.echo(stats_video(layout, found.index.slug, config, say=say,
                                   remote=(found.folder, found.index)).line())
        return
    slugs = video_slugs(layout, cities, all_videos, "analyse")
    stats_videos(layout, slugs, config, corpus=all_videos, say=say, finished=lambda result: click.echo(result.line()))


def whole_sets(sets: list[ShardSet]) -> list[ShardSet]:
    """Stats describe whole videos: a SPEC that names only some shards of a set is refused, not
    analysed as if it were the whole walk."""
    by_folder: dict[str, tuple[ShardSet, set[str]]] = {}
    for found in sets:
        by_folder.setdefault(found.folder, (found, set()))[1].update(ref.entry.name for ref in found.refs)
    for found, names in by_folder.values():
        if len(names) < len(found.index.shards):
            raise UsageError(f"the SPEC names {len(names)} of the {len(found.index.shards)} shards of "
                             f"{found.index.slug}; stats analyse whole videos",
                             f"pass the set's folder or index.json, or a pattern over all its shards "
                             f"({found.index.shards[0].name}..{found.index.shards[-1].name})")
    return [found for found, _ in by_folder.values()]


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
