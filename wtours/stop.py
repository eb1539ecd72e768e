"""Stop requests from outside: SIGTERM (how SLURM and Kubernetes preempt a job, and a time limit's end) and
SIGUSR1 (SLURM's `--signal=USR1@SECONDS` warning before the limit). The one owner of their handlers.

While `handled()` is active (the CLI's whole command), a stop signal ends the command as a Ctrl-C does: `Stopped`,
a KeyboardInterrupt, unwinds through every clean-up path, and the CLI exits with EXIT_STOPPED. Inside
`handled(defer=True)` (training) a stop signal is only recorded: the caller polls `requested()` at its own
boundaries (a step) and stops there. Ctrl-C (SIGINT) keeps Python's own behaviour everywhere."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
HELPER_GRACE_S = 10.0  # a helper process's time to go on serving after a SIGTERM (`leave_to_parent`)


class Stopped(KeyboardInterrupt):
    """A stop signal ended the command; KeyboardInterrupt's clean-up paths apply to it too."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_defer = False
_requested: int | None = None


def _on_signal(signum: int, frame: object) -> None:
    global _requested
    _requested = _requested or signum
    if not _defer:
        raise Stopped(signum)


@contextmanager
def handled(defer: bool = False) -> Iterator[None]:
    """Stop signals raise `Stopped` in the main thread for the block, or with `defer` are only recorded for
    `requested()`; the previous handlers and mode come back afterwards. Outside the main thread: nothing."""
    global _defer, _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = _defer, _requested, {s: signal.signal(s, _on_signal) for s in SIGNALS}
    _defer, _requested = defer, None
    try:
        yield
    finally:
        _defer, _requested = saved[0], saved[1]
        for s, handler in saved[2].items():
            signal.signal(s, handler)


def requested() -> int | None:
    """The first stop signal received inside `handled(defer=True)`, None while none came."""
    return _requested


def name(signum: int) -> str:
    return signal.Signals(signum).name


def leave_to_parent(*_: object) -> None:
    """In a helper process (a DataLoader worker, forked): a stop signal sent to every process of a job (SLURM
    signals the whole step) must not kill it mid-batch, which would end its parent's step with an error; its parent
    stops at its own next boundary and shuts it down. SIGUSR1 does nothing there; after SIGTERM it serves for
    HELPER_GRACE_S more seconds, then exits cleanly (status 0: not a crash to DataLoader), so that its parent's own
    SIGTERM (DataLoader's terminate, multiprocessing's exit) still ends it. Handlers, not SIG_IGN: the commands a
    helper starts get the default."""
    def grace(*args: object) -> None:
        timer = threading.Timer(HELPER_GRACE_S, os._exit, (0,))
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGUSR1, lambda *args: None)
    signal.signal(signal.SIGTERM, grace)
