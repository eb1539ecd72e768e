"""`wtours verify`."""

from __future__ import annotations

from pathlib import Path

import click

from wtours.cli.common import root_option, say, verbosity_options
from wtours.config import WORKERS, number_type
from wtours.errors import UsageError, WtoursError
from wtours.layout import INDEX_FILE, Layout
from wtours.locks import reading
from wtours.redact import shown
from wtours.selection import shard_set_slugs
from wtours.shard.verify import repair_set, root_of, verify_folder
from wtours.system import usable_cpus


def _targets(layout: Layout, specs: tuple[str, ...], cities: tuple[str, ...], all_sets: bool
             ) -> list[tuple[Path, str]]:
    """(shard folder, label) per set: --city/--all under the root; a SPEC is a slug or a folder (checked in place)."""
    slugs = shard_set_slugs(layout, cities, all_sets, "verify") if cities or all_sets or not specs else []
    targets = [(layout.shard_dir(slug), slug) for slug in slugs]
    for spec in specs:
        path = Path(spec).expanduser()
        path = path.parent if path.name == INDEX_FILE else path
        if layout.names_set(spec):  # its folder, even without an index: a run may be writing it (refused then)
            slug = spec if layout.shard_dir(spec).is_dir() else shard_set_slugs(layout, (spec,), False, "verify")[0]
            targets.append((layout.shard_dir(slug), slug))
        elif path.is_dir() and (path / INDEX_FILE).is_file():
            targets.append((path, str(path)))
        else:
            raise UsageError(f"SPEC {shown(spec)!r} is not a shard set under {layout.root} nor a folder with "
                             f"{INDEX_FILE}",
                              "pass a slug (venice), a shard folder (<root>/shards/venice), --city SLUG or --all; "
                              "remote sets are verified when pulled (`wtours pull`)")
    return targets


@click.command()
@click.argument("specs", nargs=-1)
@click.option("--city", "cities", multiple=True, metavar="SLUG", help="Shard set to verify; repeatable.")
@click.option("--all", "all_sets", is_flag=True, help="Every shard set under the root.")
@root_option
@click.option("--repair", is_flag=True,
              help="Reshard just the bad shards from the registered video (byte-identical to the index).")
@click.option("--workers", type=number_type(int, WORKERS),
              help="ffmpeg processes for --repair (default: the usable CPUs).")
@verbosity_options
def verify(specs, cities, all_sets, root, repair, workers) -> None:
    """Check local shards against index.json: size, sha256, readable members, sample count and offsets.

    Names every bad shard (missing, truncated, damaged) and exits with status 1 if there is one;
    --repair reshards just those segments from the registered video and checks them again (for a
    blur-faces output: blurs them again from the set it was made from).

    SPEC: a slug under --root, or a shard folder holding index.json (checked in place; ./NAME for a
    folder named like a video).

    \b
    Examples:
      wtours verify --city venice
      wtours verify --all --root /data/wtours
      wtours verify venice --repair
    """
    from wtours.shard.blur_set import blurred_from, repair_blurred_set  # numpy and PIL: only when verifying

    layout = Layout(root)
    bad: list[str] = []
    for folder, label in _targets(layout, specs, cities, all_sets):
        with reading([folder]):  # repairs take the folder exclusively, after this
            report = verify_folder(folder, where=label)
        for line in report.lines():
            click.echo(line)
        if repair and not report.ok:
            jobs = workers or usable_cpus()
            report = (repair_blurred_set(folder, report, jobs, say=say) if blurred_from(folder)
                      else repair_set(root_of(folder, report.slug), report.slug, report, jobs, say=say))
            click.echo(f"{label}: repaired; {report.shards} shards ok")
        bad += [f"{label}/{p.name}" for p in report.problems]
    if bad:
        raise WtoursError(f"{len(bad)} bad shard(s): {', '.join(bad)}",
                          "run the same command with --repair to redo just those (needs the registered video, or for a "
                          "blur-faces output the set it was made from), "
                          "or `wtours pull` the set again", exit_code=1)
