"""Errors a user can act on: what went wrong, and what to do about it.

The exit statuses, the CLI's contract, are `EXIT_CODES` below: the one table. `wtours --help` ends with it,
scripts/cli_reference.py writes it into docs/cli.md, and tests/test_cli_conventions.py checks that
docs/troubleshooting.md lists every status. A `UsageError` (exit 2) is anything wrong in what the user typed: an option,
an argument, a name, a value out of its range or choices (Click's own errors exit 2 as well); a plain `WtoursError`
(exit 1) is a failure while running."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
EXIT_DIVERGED = 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C
EXIT_STOPPED = 143  # 128 + SIGTERM: stopped on a scheduler's request (wtours.stop), resumable

EXIT_CODES = (
    (EXIT_OK, "success"),
    (EXIT_FAILURE, "runtime failure: the machine, the network, a damaged input, a lock held by another run"),
    (EXIT_USAGE, "usage error: a bad option, argument, name or value (fix the command line)"),
    (EXIT_INCOMPLETE, "incomplete: finished partly (e.g. a truncated video); what was done is kept"),
    (EXIT_DIVERGED, "training diverged (non-finite loss); the last good checkpoint is kept"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C); rerun the same command to resume"),
    (EXIT_STOPPED, "stopped by SIGTERM or SIGUSR1 (preemption, a time limit): train wrote a checkpoint at the step "
     "it stopped; rerun the same command (train: with --resume) to continue"),
)


class WtoursError(Exception):
    """A failure with an actionable hint; the CLI prints both and exits with `exit_code`.

    A plain WtoursError is a runtime failure (exit 1); raise `UsageError` for bad user input (exit 2)."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(WtoursError):
    """The user's command line is wrong (an option, a name, a value): fixing it, not rerunning, helps."""

    exit_code = EXIT_USAGE


class IncompleteError(WtoursError):
    """Work finished partly (e.g. a video truncated midway): what was done is kept and indexed."""

    exit_code = EXIT_INCOMPLETE
