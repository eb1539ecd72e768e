"""`wtours push` and `wtours pull`."""

from __future__ import annotations

import click

from wtours.cli.common import is_quiet, root_option, say, verbosity_options
from wtours.config import Range, number_type
from wtours.errors import UsageError
from wtours.layout import SLUG_PATTERN, Layout
from wtours.selection import shard_set_slugs


@click.command("push")
@click.option("--city", "cities", multiple=True, metavar="SLUG", help="Shard set to upload; repeatable.")
@click.option("--all", "all_sets", is_flag=True, help="Every shard set (with an index.json) under the root.")
@click.option("--model", "model_dir", type=click.Path(), metavar="DIR",
              help="Upload a model instead: a `wtours export --format timm` folder, to a Hub model repo.")
@click.option("--repo", required=True, metavar="USER/NAME",
              help="Hub dataset repo (model repo with --model); created if missing.")
@root_option
@click.option("--private", is_flag=True, help="Create the repo private (an existing repo keeps its visibility).")
@click.option("--revision", default="main", show_default=True, metavar="BRANCH", help="Branch to commit to (created).")
@click.option("--max-commit-files", default=50, show_default=True, type=number_type(int, Range(1, 10_000)),
              help="Files per commit (the Hub advises < 100); shard sets only.")
@click.option("--max-commit-gb", default=10.0, show_default=True,
              type=number_type(float, Range(0, 1000, open_low=True)),
              help="Gigabytes per commit; shard sets only.")
@click.option("--dry-run", is_flag=True, help="Show what would be uploaded; change nothing.")
@click.option("--license", "license_", default=None, metavar="ID",
              help="With --model: the weights' licence in the model card (a Hub licence id); default: the one "
                   "`wtours export --license` recorded (cc-by-4.0, the videos' licence, unless set).")
@click.option("--dataset", "datasets", multiple=True, metavar="USER/NAME[@REV]",
              help="With --model: a Hub dataset repo the model was trained on, linked from its card; repeatable.")
@verbosity_options
def push(cities, all_sets, model_dir, repo, root, private, revision, max_commit_files, max_commit_gb,
         dry_run, license_, datasets) -> None:
    """Upload shard sets, their index.json and a dataset card to a Hub dataset repo; or, with
    --model DIR, an exported encoder and its model card to a Hub model repo.

    Layout in a dataset repo: <slug>/<slug>-NNNNNN.tar, <slug>/index.json, <slug>/<slug>.wids.json,
    <slug>/source.json and README.md. A model repo gets model.safetensors, config.json and README.md
    (the card: method and citation, training data, the run's settings and k-NN results), which timm loads as
    timm.create_model('hf-hub:USER/NAME', pretrained=True). A rerun uploads only what the repo lacks
    (checked by sha256), so an interrupted push resumes. A README.md someone else wrote is kept.
    Uses your `hf auth login` token or HF_TOKEN.

    \b
    Examples:
      wtours push --city venice --repo alice/walking-tours
      wtours push --all --repo alice/walking-tours --private
      wtours push --city venice --repo alice/walking-tours --revision fps1 --dry-run
      wtours push --model venice-vits16 --repo alice/venice-vits16
    """
    from wtours.hub.client import HubTarget

    if model_dir is None and (license_ is not None or datasets):
        raise UsageError("--license and --dataset describe a model: they go with --model DIR",
                         "a dataset's licences are its videos' (recorded when they were downloaded or added)")
    if model_dir is not None:
        if cities or all_sets:
            raise UsageError("--model uploads a model; --city/--all upload shard sets", "push them one at a time")
        from pathlib import Path

        from wtours.hub.model import ModelPushConfig, push_model
        from wtours.hub.model_card import parse_dataset

        summary = push_model(ModelPushConfig(HubTarget(repo, revision), Path(model_dir), private=private,
                                             dry_run=dry_run, progress=not is_quiet(), license=license_,
                                             datasets=tuple(parse_dataset(d) for d in datasets)), say=say)
        click.echo("dry run: nothing uploaded" if dry_run else summary.line(repo))
        return
    from wtours.hub.push import PushConfig
    from wtours.hub.push import push as run_push

    layout = Layout(root)
    slugs = tuple(shard_set_slugs(layout, cities, all_sets, "push"))
    config = PushConfig(target=HubTarget(repo, revision), slugs=slugs,
                        private=private, max_commit_files=max_commit_files,
                        max_commit_bytes=int(max_commit_gb * 1e9), dry_run=dry_run, progress=not is_quiet())
    summary = run_push(layout, config, say=say)
    click.echo("dry run: nothing uploaded" if dry_run else summary.line(repo))


@click.command("pull")
@click.option("--repo", required=True, metavar="USER/NAME", help="Hub dataset repo to download from.")
@click.option("--city", "cities", multiple=True, metavar="SLUG",
              help="Shard set to download (default: all); repeatable.")
@root_option
@click.option("--revision", default="main", show_default=True, metavar="BRANCH", help="Branch, tag or commit.")
@verbosity_options
def pull(repo, cities, root, revision) -> None:
    """Download shard sets from a Hub dataset repo into <root>/shards/<slug>/.

    Every shard is checked against the sha256 in its index before it gets its final name; shards
    already present with the right checksum are kept, and a partial download continues where it
    stopped. The index is written last. Uses your `hf auth login` token or HF_TOKEN.

    \b
    Examples:
      wtours pull --repo alice/walking-tours
      wtours pull --repo alice/walking-tours --city venice --root /data/wtours
      wtours train --shards venice --root /data/wtours --out runs/venice   # then train locally
    """
    from wtours.hub.client import HubTarget
    from wtours.hub.pull import PullConfig
    from wtours.hub.pull import pull as run_pull

    for name in cities:
        if not SLUG_PATTERN.match(name):
            raise UsageError(f"{name!r} is not a shard set name", "use the slug as in the repo, e.g. --city venice")
    summary = run_pull(Layout(root), PullConfig(HubTarget(repo, revision), tuple(cities), progress=not is_quiet()),
                       say=say)
    click.echo(summary.line())
