"""Options and output shared by every command (one owner for --root, -q and -v)."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Callable

import click

from wtours.errors import WtoursError


def root_option(func: Callable) -> Callable:
    return click.option("--root", type=click.Path(file_okay=False), envvar="WTOURS_ROOT", show_envvar=True,
                        help="Data root (default: $WTOURS_ROOT, else ~/.local/share/wtours).")(func)


def verbosity_options(func: Callable) -> Callable:
    """-q silences progress and chatter; -v logs debug detail (yt-dlp's and ffmpeg's too)."""

    @click.option("-q", "--quiet", is_flag=True, help="Print only errors and the final result.")
    @click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
    @functools.wraps(func)
    def wrapper(*args, quiet: bool, verbose: bool, **kwargs):
        logging.basicConfig(level=logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        ctx = click.get_current_context()
        ctx.meta["wtours.quiet"] = quiet
        return func(*args, **kwargs)

    return wrapper


def is_quiet() -> bool:
    return bool(click.get_current_context().meta.get("wtours.quiet"))


def say(message: str) -> None:
    """Progress chatter: silenced by -q."""
    if not is_quiet():
        click.echo(message)


class WtoursGroup(click.Group):
    """Turns library errors into a message with its hint and the error's exit status."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except WtoursError as e:
            click.secho(f"error: {e.message}", fg="red", err=True)
            if e.hint:
                click.echo(f"  hint: {e.hint}", err=True)
            sys.exit(e.exit_code)
