"""`wtours card`."""

from __future__ import annotations

from pathlib import Path

import click

from wtours.cli.common import root_option, verbosity_options
from wtours.errors import UsageError
from wtours.layout import Layout, is_url
from wtours.selection import shard_set_slugs


@click.command("card")
@click.option("--city", "cities", multiple=True, metavar="SLUG", help="Shard set the card describes; repeatable.")
@click.option("--all", "all_sets", is_flag=True, help="Every shard set (with an index.json) under the root.")
@click.option("--repo", required=True, metavar="USER/NAME",
              help="Hub dataset repo the card is for (named in its loading instructions).")
@click.option("--revision", default="main", show_default=True, metavar="BRANCH",
              help="Branch the loading instructions read from.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Where to write the card (README.md at the top of the upload).")
@click.option("--overwrite", "--force", "overwrite", is_flag=True,
              help="Replace --out even if it is not a card written by wtours.")
@root_option
@verbosity_options
def card(cities, all_sets, repo, revision, out, overwrite, root) -> None:
    """Write the dataset card (README.md) that `wtours push` would upload, without contacting the Hub.

    For uploading with the Hub's own tools (`hf upload`): the card attributes every video (source,
    creator, licence), says how the frames were sampled and what was blurred, and how to load and cite
    them. It describes only the sets named here (`wtours push` also counts those already in the repo).
    An existing --out is replaced only if wtours wrote it, or with --overwrite.

    \b
    Examples:
      wtours card --city venice --city zurich --repo alice/walking-tours --out README.md
      wtours card --all --repo alice/walking-tours --out /data/wtours/shards/README.md
    """
    from wtours.hub.card import local_card, write_card

    if is_url(out):  # Path("hf://datasets/x") would be the local folder ./hf:/datasets/
        raise UsageError(f"--out {out!r} is a URL; `wtours card` writes a local file",
                         f"write it locally (--out README.md), then upload it: `wtours push --repo {repo}` "
                         "writes the card itself, or `hf upload`")
    layout = Layout(root)
    slugs = shard_set_slugs(layout, cities, all_sets, "describe")
    write_card(Path(out), local_card(layout, slugs, repo, revision), overwrite)
    click.echo(f"wrote the dataset card for {len(slugs)} shard set{'s' if len(slugs) != 1 else ''} to {out}")
