"""`wtours card`."""

from __future__ import annotations

from pathlib import Path

import click

from wtours.cli.common import root_option, verbosity_options
from wtours.errors import UsageError, WtoursError
from wtours.layout import Layout, is_url
from wtours.selection import shard_set_slugs


@click.command("card")
@click.option("--city", "cities", multiple=True, metavar="SLUG", help="Shard set the card describes; repeatable.")
@click.option("--all", "all_sets", is_flag=True, help="Every shard set (with an index.json) under the root.")
@click.option("--repo", metavar="USER/NAME",
              help="Hub dataset repo the card is for (named in its loading instructions); not with --local.")
@click.option("--revision", default="main", show_default=True, metavar="BRANCH",
              help="Branch the loading instructions read from.")
@click.option("--out", type=click.Path(dir_okay=False), metavar="FILE",
              help="Where to write the card (README.md at the top of the upload); not with --local.")
@click.option("--local", is_flag=True,
              help="Write the data root's own card, <root>/shards/README.md, for every set under the root: what "
                   "`datasets.load_dataset(<root>/shards[, SLUG])` loads the sets by (no attribution needed).")
@click.option("--overwrite", "--force", "overwrite", is_flag=True,
              help="Replace --out even if it is not a card written by wtours.")
@root_option
@verbosity_options
def card(cities, all_sets, repo, revision, out, local, overwrite, root) -> None:
    """Write the dataset card (README.md) that `wtours push` would upload, without contacting the Hub.

    For uploading with the Hub's own tools (`hf upload`): the card attributes every video (source,
    creator, licence), says how the frames were sampled and what was blurred, and how to load and cite
    them. It describes only the sets named here (`wtours push` also counts those already in the repo).
    An existing --out is replaced only if wtours wrote it, or with --overwrite.

    With --local, writes <root>/shards/README.md instead (as `wtours shard` does): one `datasets` config per
    set and the samples' features, so that `load_dataset("<root>/shards")` and `load_dataset("<root>/shards",
    "venice")` read the sets in place. It names no repo and needs no source or licence.

    \b
    Examples:
      wtours card --city venice --city zurich --repo alice/walking-tours --out README.md
      wtours card --all --repo alice/walking-tours --out /data/wtours/shards/README.md
      wtours card --local --root /data/wtours
    """
    from wtours.hub.card import local_card, write_card

    if local:
        write_root_card(Layout(root), cities, all_sets, repo, out, overwrite)
        return
    if repo is None or out is None:
        raise UsageError(f"missing {' and '.join(o for o, v in (('--repo', repo), ('--out', out)) if v is None)}",
                         "name the Hub repo and the file: `wtours card --all --repo USER/NAME --out README.md`; "
                         "or `wtours card --local` for the data root's own card")

    if is_url(out):  # Path("hf://datasets/x") would be the local folder ./hf:/datasets/
        raise UsageError(f"--out {out!r} is a URL; `wtours card` writes a local file",
                         f"write it locally (--out README.md), then upload it: `wtours push --repo {repo}` "
                         "writes the card itself, or `hf upload`")
    layout = Layout(root)
    slugs = shard_set_slugs(layout, cities, all_sets, "describe")
    write_card(Path(out), local_card(layout, slugs, repo, revision), overwrite)
    click.echo(f"wrote the dataset card for {len(slugs)} shard set{'s' if len(slugs) != 1 else ''} to {out}")


def write_root_card(layout: Layout, cities, all_sets, repo, out, overwrite) -> None:
    """`wtours card --local`: the data root's card, for every set (a Hub card there, or with --overwrite any
    README, is replaced)."""
    from wtours.shard.card import GENERATED_MARKS, write_local_card

    given = [name for name, value in (("--city", cities), ("--all", all_sets), ("--repo", repo), ("--out", out))
             if value]
    if given:
        raise UsageError(f"--local takes no {', '.join(given)}: it describes every shard set under the root, "
                         f"in {layout.shards_card_path()}", "drop them, or drop --local for a Hub card")
    if not layout.indexed_slugs():
        raise WtoursError(f"no shard sets under {layout.shards_base()}", "run `wtours shard --city SLUG` first")
    path = write_local_card(layout, GENERATED_MARKS, overwrite)
    if path is None:
        raise UsageError(f"{layout.shards_card_path()} exists and is not a dataset card written by wtours; "
                         "it was left as is", "pass --overwrite to replace it")
    click.echo(f"wrote {path}: `datasets.load_dataset({str(layout.shards_base())!r})` loads every set, "
               f"`load_dataset({str(layout.shards_base())!r}, SLUG)` one")
