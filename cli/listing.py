"""`wtours list`."""

from __future__ import annotations

import json

import click

from wtours.catalog import catalog, format_table
from wtours.cli.common import root_option, root_origin
from wtours.layout import Layout


@click.command("list")
@root_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows for scripts.")
def list_videos(root: str | None, as_json: bool) -> None:
    """Show the corpus manifest and what the data root holds (downloaded, sharded, analysed).

    The first line names the data root read and where it came from (--root, $WTOURS_ROOT or the
    default folder); with --json it goes to stderr. Before a download, the duration and resolution
    are the manifest's stated ones, marked '~'.

    \b
    Examples:
      wtours list
      wtours list --root /data/wtours --json
    """
    layout = Layout(root)
    rows = catalog(layout)
    click.echo(f"root: {layout.root} (from {root_origin(click.get_current_context())})", err=as_json)
    click.echo(json.dumps(rows, indent=2) if as_json else format_table(rows))
