"""Write docs/cli.md from the Click help of every command (tests/test_docs.py keeps it in sync).

    python scripts/cli_reference.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from wtours.cli.main import cli

OUT = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _commands(group: click.Group, prefix: list[str]):
    for name in sorted(group.commands):
        command = group.commands[name]
        yield [*prefix, name], command
        if isinstance(command, click.Group):
            yield from _commands(command, [*prefix, name])


def render() -> str:
    parts = ["# CLI reference", "", "Generated from the commands' `--help` by `python scripts/cli_reference.py`;",
             "`tests/test_docs.py` fails when it is out of date.", ""]
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
