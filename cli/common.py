"""Options and output shared by every command (one owner for --root, -q and -v)."""

from __future__ import annotations

import errno
import functools
import logging
import sys
from collections.abc import Callable

import click

from wtours.errors import WtoursError


def root_option(func: Callable) -> Callable:
    return click.option("--root", type=click.Path(), metavar="DIRECTORY", envvar="WTOURS_ROOT", show_envvar=True,
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


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C

# Faults of the machine rather than of wtours: what each means for the user, keyed by errno.
_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free space (or choose another --root/--out) and rerun; the rerun resumes",
    errno.EDQUOT: "the disk quota is used up: free space and rerun; the rerun resumes",
    errno.EROFS: "the file system is read-only: choose a writable --root/--out",
    errno.EACCES: "no permission: choose a folder you can write to (--root/--out), or fix its permissions",
    errno.EPERM: "not permitted: choose a folder you can write to (--root/--out), or fix its permissions",
    errno.ENOTDIR: "a path on the way is a file, not a folder: choose another --root/--out",
    errno.EISDIR: "a folder stands where a file is expected: choose another path",
}


def _report(message: str, hint: str | None) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    if hint:
        click.echo(f"  hint: {hint}", err=True)


class WtoursGroup(click.Group):
    """Turns library errors, the machine's faults and Ctrl-C into a message with a hint and an exit
    status (never a traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except WtoursError as e:
            _report(e.message, e.hint)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            _report("interrupted", "nothing partial was kept under a final name; rerun the same command to resume")
            sys.exit(EXIT_INTERRUPTED)
        except OSError as e:
            if e.errno not in _OS_HINTS:
                raise
            where = f" ({e.filename})" if e.filename else ""
            _report(f"{e.strerror or e}{where}", _OS_HINTS[e.errno])
            sys.exit(WtoursError.exit_code)
