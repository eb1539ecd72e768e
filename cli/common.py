"""Options and output shared by every command (one owner for --root, -q and -v)."""

from __future__ import annotations

import errno
import functools
import logging
import sys
from collections.abc import Callable

import click

from wtours import stop
from wtours.errors import EXIT_CODES, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_STOPPED, EXIT_USAGE, WtoursError
from wtours.layout import ROOT_ENV, ROOT_URL_HINT, is_url


def local_root(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a URL before anything makes a local folder named after its scheme (`s3:`)."""
    if value is not None and is_url(value):
        source = "$WTOURS_ROOT" if ctx.get_parameter_source(param.name or "") == \
            click.core.ParameterSource.ENVIRONMENT else "--root"
        raise click.BadParameter(f"{value!r} is a URL; {ROOT_URL_HINT}.", ctx=ctx, param=param, param_hint=source)
    return value


def root_option(func: Callable) -> Callable:
    return click.option("--root", type=click.Path(), metavar="DIRECTORY", envvar="WTOURS_ROOT", show_envvar=True,
                        callback=local_root,
                        help="Data root, a local folder (default: $WTOURS_ROOT, else ~/.local/share/wtours).")(func)


def root_origin(ctx: click.Context) -> str:
    """Where the command's data root came from: `--root`, `$WTOURS_ROOT` or the default folder."""
    source = ctx.get_parameter_source("root")
    if source == click.core.ParameterSource.COMMANDLINE:
        return "--root"
    if source == click.core.ParameterSource.ENVIRONMENT:
        return f"${ROOT_ENV}"
    return "default"


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


# A path the user chose names the wrong kind of thing (a file where a folder must be): a usage error,
# as a --root that is a file is; the others are faults of the machine.
_PATH_KIND_ERRNOS = frozenset({errno.ENOTDIR, errno.EISDIR})


def _report(message: str, hint: str | None) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    if hint:
        click.echo(f"  hint: {hint}", err=True)


def exit_status_epilog() -> str:
    """The exit-status table for `wtours --help` (wtours.errors.EXIT_CODES, as docs/cli.md lists it)."""
    rows = "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES)
    return f"\b\nExit status:\n{rows}"


class SectionedCommand(click.Command):
    """A command whose --help lists its options under headings: an option's `help_section` attribute, else
    its sub-config (`config_path`, set by wtours.config.click_options: "Model loss options (model.loss.*)"),
    else the plain "Options" (first: the command's own options, -q, -v, --help). Sections keep the order in
    which their first option comes."""

    def __init__(self, *args, sections: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sections = sections or {}  # option name -> heading, for options of the top config

    def section_of(self, param: click.Parameter) -> str:
        path = getattr(param, "config_path", ())
        if path:
            return f"{' '.join(path).capitalize()} options ({'.'.join(path)}.*)"
        return self.sections.get(param.name or "", "Options")

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {"Options": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                sections.setdefault(self.section_of(param), []).append(record)
        for title, records in sections.items():
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


class WtoursGroup(click.Group):
    """Turns library errors, bad option values, the machine's faults, Ctrl-C and the stop signals (wtours.stop) into
    a message with a hint and an exit status (never a traceback); the root group's help ends with the exit-status
    table."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        if ctx.parent is None:
            formatter.write_paragraph()
            with formatter.indentation():
                formatter.write_text(exit_status_epilog())

    def invoke(self, ctx: click.Context):
        try:
            with stop.handled():
                return super().invoke(ctx)
        except WtoursError as e:
            _report(e.message, e.hint)
            sys.exit(e.exit_code)
        except click.BadParameter as e:  # an option's value (range, choice, type): said as wtours' own errors are
            command = e.ctx.command_path if e.ctx else "wtours"
            _report(e.format_message(), f"`{command} --help` shows each option's allowed values")
            sys.exit(EXIT_USAGE)
        except stop.Stopped as e:
            _report(f"stopped by {stop.name(e.signum)}", "what was finished is kept and nothing partial under a final "
                    "name; rerun the same command to resume")
            sys.exit(EXIT_STOPPED)
        except KeyboardInterrupt:
            _report("interrupted", "nothing partial was kept under a final name; rerun the same command to resume")
            sys.exit(EXIT_INTERRUPTED)
        except OSError as e:
            if e.errno not in _OS_HINTS:
                raise
            where = f" ({e.filename})" if e.filename else ""
            _report(f"{e.strerror or e}{where}", _OS_HINTS[e.errno])
            sys.exit(EXIT_USAGE if e.errno in _PATH_KIND_ERRNOS else EXIT_FAILURE)
