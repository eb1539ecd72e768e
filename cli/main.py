"""`wtours` entry point: the command group."""

from __future__ import annotations

import click

from wtours import __version__
from wtours.cli.blur_faces import blur_faces
from wtours.cli.card import card
from wtours.cli.common import WtoursGroup
from wtours.cli.demo import demo
from wtours.cli.eval_cmd import eval_group
from wtours.cli.fetch import add, download
from wtours.cli.hub import pull, push
from wtours.cli.inspect_cmd import inspect_shards
from wtours.cli.listing import list_videos
from wtours.cli.shard import shard
from wtours.cli.stats import stats
from wtours.cli.train_cmd import export, train
from wtours.cli.verify import verify
from wtours.cli.viz import viz


@click.group(cls=WtoursGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="wtours")
def cli() -> None:
    """Walking Tours toolkit: download -> shard -> stats -> train -> hub.

    \b
    Typical run:
      wtours list                       # the corpus and what your data root holds
      wtours download --city venice     # fetch a video (yt-dlp, resumable, verified)
      wtours shard --city venice        # decode into time-ordered WebDataset shards
    """


cli.add_command(list_videos)
cli.add_command(download)
cli.add_command(add)
cli.add_command(shard)
cli.add_command(stats)
cli.add_command(inspect_shards)
cli.add_command(train)
cli.add_command(export)
cli.add_command(push)
cli.add_command(pull)
cli.add_command(card)
cli.add_command(demo)
cli.add_command(viz)
cli.add_command(eval_group)
cli.add_command(verify)
cli.add_command(blur_faces)


def main() -> None:
    cli(prog_name="wtours")
