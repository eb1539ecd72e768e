"""Write docs/cli.md from the Click help of every command (tests/test_docs.py keeps it in sync).

    python scripts/cli_reference.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from wtours.cli.main import cli
from wtours.errors import EXIT_CODES

OUT = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _commands(group: click.Group, prefix: list[str]):
    for name in sorted(group.commands):
        command = group.commands[name]
        yield [*prefix, name], command
        if isinstance(command, click.Group):
            yield from _commands(command, [*prefix, name])


OPTION_VALUES = """\
Every numeric option declares its range, shown in its help (`[x>=1]`, `[0<=x<=1]`); ranges and
choices are declared once, beside each setting's help, as metadata of the typed configs
(`wtours/config.py`). One validator checks every value, whether it comes from the command line,
`--config FILE` or `--set KEY=VALUE`: a value outside its range, NaN or infinity for a number, a
value that is not one of an option's choices, and a name that names nothing (an unknown city, a
SPEC that names no corpus video and nothing registered or sharded under `--root`) are usage errors:
exit status 2, an `error:` line naming the option, the value and what is allowed, and a `hint:`. A
well-formed command that then fails on the data, the machine or the network exits 1; so does a
corpus video (or a registered one) that is not downloaded or not sharded yet under `--root`: a step
left to run, which the hint names (`wtours download --city venice`, `wtours shard --city venice`), after
which the same command succeeds."""

NAMES_AND_PATHS = """\
A SPEC (of `inspect`, `verify`, `blur-faces`, `--shards`) shaped like a video name (lowercase letters,
digits and `-`: no `/`, no `.`) is always the shard set of that name under `--root`, whatever the
current folder holds; anything else is a path or URL. Where the current folder also holds a folder
of that name, the command says which it used in one line on stderr (`note: 'venice' is the shard set
venice under the data root (...), not the folder ./venice here: pass ./venice for that folder`): write
`./venice` (or any path with a `/`) for that folder."""


def exit_statuses() -> list[str]:
    """The exit-status table, from `wtours.errors.EXIT_CODES` (its one owner)."""
    rows = [f"| {code} | {meaning} |" for code, meaning in EXIT_CODES]
    return ["## Exit status", "", "Every command exits with one of these (`wtours --help` ends with the same table):",
            "", "| status | meaning |", "|---|---|", *rows, "", "## Option values", "", OPTION_VALUES, "",
            "## A name or a path", "", NAMES_AND_PATHS, ""]


def render() -> str:
    parts = ["# CLI reference", "", "Generated from the commands' `--help` by `python scripts/cli_reference.py`;",
             "`tests/test_docs.py` fails when it is out of date.", "", *exit_statuses()]
    with click.Context(cli, info_name="wtours", terminal_width=100) as ctx:
        parts += ["## wtours", "", "```", cli.get_help(ctx), "```", ""]
    for path, command in _commands(cli, []):
        with click.Context(command, info_name="wtours " + " ".join(path), terminal_width=100) as ctx:
            parts += [f"## wtours {' '.join(path)}", "", "```", command.get_help(ctx), "```", ""]
    return "\n".join(parts)


def main() -> None:
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if OUT.read_text() == text else 1)
    OUT.write_text(text)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
