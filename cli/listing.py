"""`wtours list`."""

from __future__ import annotations

import json

import click

from wtours.catalog import catalog, format_table
from wtours.cli.common import root_option
from wtours.layout import Layout


@click.command("list")
@root_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows for scripts.")
def list_videos(root: str | None, as_json: bool) -> None:
    """Show the corpus manifest and what the data root holds (downloaded, sharded, analysed).

    \b
    Examples:
      wtours list
      wtours list --root /data/wtours --json
    """
    rows = catalog(Layout(root))
    click.echo(json.dumps(rows, indent=2) if as_json else format_table(rows))
