"""The one way tests run the `wtours` command line.

`run_wtours(ARGS)` runs it in this process with Click's CliRunner: no interpreter start and no torch
import per call, so use it by default. `run_wtours_process(ARGS)` runs `python -m wtours` and
`start_wtours(ARGS)` starts it without waiting; use them only where a real process matters:
signals, locks held by another process, kill -9, a deadline on a hang, or an environment that a
library reads when it is imported (huggingface_hub reads HF_ENDPOINT then).

All three take `env` as the command's whole environment (default: this process's), as
subprocess does; in this process the difference to os.environ is applied for the run only.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import click
from click.testing import CliRunner

from wtours.cli.main import cli
from wtours.errors import UsageError

WTOURS_COMMAND = (sys.executable, "-m", "wtours")
PROCESS_DEADLINE_S = 600.0  # a hang guard far above any command's normal time in the tests
TRACEBACK = "Traceback (most recent call last)"


@dataclass(frozen=True)
class CliResult:
    """How a command ended. `error` is the kind of error that ended it, in this process only: the
    WtoursError subclass the CLI turned into a message and an exit status, or the exception that
    escaped it (then `crashed` is true). Click's own refusals of an option (exit 2, "Error: ...")
    leave it None: Click exits after its `except`. A process only tells its traceback."""

    returncode: int
    stdout: str
    stderr: str
    error: type[BaseException] | None = None
    crashed: bool = False

    @property
    def exit_code(self) -> int:
        """Click's name for the exit status."""
        return self.returncode

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_wtours(args: Sequence[str | Path], env: Mapping[str, str] | None = None, cwd: Path | None = None,
           input: str | None = None) -> CliResult:
    """The CLI in this process (Click's runner), as `wtours ARGS` would run."""
    with working_directory(cwd):
        result = CliRunner().invoke(cli, [str(a) for a in args], input=input, env=env_changes(env),
                                    prog_name="wtours")
    escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
    return CliResult(result.exit_code, result.stdout, result.stderr, error_kind(result.exception), escaped)


def run_wtours_process(args: Sequence[str | Path], env: Mapping[str, str] | None = None, cwd: Path | None = None,
                   timeout: float = PROCESS_DEADLINE_S, memory_limit: int | None = None) -> CliResult:
    """`python -m wtours ARGS` in a process of its own; `memory_limit`: its address space in bytes (RLIMIT_AS),
    so that a regression that would eat the machine's memory fails the test instead."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    done = subprocess.run([*WTOURS_COMMAND, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout, preexec_fn=limit if memory_limit else None)
    return CliResult(done.returncode, done.stdout, done.stderr, crashed=TRACEBACK in done.stderr)


def start_wtours(args: Sequence[str | Path], env: Mapping[str, str] | None = None,
                 start_new_session: bool = False) -> subprocess.Popen:
    """`python -m wtours ARGS` started, not waited for (pipes for stdout and stderr, text mode);
    `start_new_session`: in a process group of its own, like a terminal's foreground job."""
    return subprocess.Popen([*WTOURS_COMMAND, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=start_new_session, preexec_fn=_interruptible)


def _interruptible() -> None:
    """In the child: SIGINT back to its default, so Python turns it into KeyboardInterrupt even where the
    test run itself ignores it (a background job of a non-interactive shell inherits SIGINT ignored, and
    Python installs its handler only over the default disposition)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def assert_clean_error(result: CliResult, code: int, phrase: str = "",
                         kind: type[BaseException] | None = None) -> str:
    """Exit status `code`, an `error:` line and its `hint:`, no traceback, and (when given) one short
    phrase of the message and the error's kind. Returns stderr for further checks."""
    err = result.stderr
    assert result.returncode == code, (result.returncode, err)
    assert not result.crashed and TRACEBACK not in result.output, err
    assert "error: " in err and "hint: " in err, err
    assert phrase in err, f"{phrase!r} not in: {err}"
    if kind is not None:
        assert result.error is not None and issubclass(result.error, kind), (result.error, kind)
    return err


def error_kind(exception: BaseException | None) -> type[BaseException] | None:
    """The error behind an exit: the CLI catches a library error and calls sys.exit inside its
    `except`, so the SystemExit's context is the error that ended the run."""
    if exception is None:
        return None
    kind = type(exception.__context__) if isinstance(exception, SystemExit) else type(exception)
    if kind is type(None):
        return None
    # Click's own refusal of an option value (BadParameter, ...) is a usage error as wtours' own is.
    return UsageError if issubclass(kind, click.UsageError) else kind


def env_changes(env: Mapping[str, str] | None) -> dict[str, str | None] | None:
    """A whole environment as CliRunner's changes to os.environ (None unsets a variable)."""
    if env is None:
        return None
    changes: dict[str, str | None] = {k: v for k, v in env.items() if os.environ.get(k) != v}
    changes.update({k: None for k in os.environ if k not in env})
    return changes


@contextlib.contextmanager
def working_directory(folder: Path | None) -> Iterator[None]:
    """Run in `folder` (None: stay); contextlib.chdir is Python 3.11+, the project supports 3.10."""
    previous = Path.cwd()
    if folder is not None:
        os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)
