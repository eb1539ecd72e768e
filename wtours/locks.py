"""Who may use a folder at once: one writer (`wtours train` per run folder, `shard`, `verify --repair`, `pull` or
`blur-faces` per shard folder), or any number of readers of a shard set (`stats`, `train`, `viz`, `verify`, `push`,
the source of `blur-faces`), never both.

The lock is an advisory `flock` on a file inside the folder, which no command removes (so a writer that replaces
a set keeps holding it). The kernel drops it when the holder exits, however it exits (kill -9 included), so a lock
left by a dead run never blocks the next one; the file only says who took it last, for the message a refused run
prints."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from wtours.errors import WtoursError

LOCK_FILE = ".wtours.lock"  # the folder's lock, and the record of who took it last
READERS, RANKS = "readers", "ranks"  # the groups: a shard set's readers; the ranks of a multi-node `shard`
RECORD_BYTES = 512  # the record is padded to this: a shorter one overwrites a longer one whole, in one write


class FolderBusyError(WtoursError):
    """Another live process holds the folder (a runtime failure: exit 1, rerun when it is done)."""


def _holder(path: Path) -> dict:
    try:
        holder = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _holder_text(holder: dict) -> str:
    if not holder:
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    reading = ", reading" if holder.get("group") == READERS else ""
    return f"pid {holder.get('pid')} on {holder.get('host')} ({holder.get('command')}{reading}, since {started})"


def _open(path: Path, reader: bool) -> int | None:
    """A lock file, made if need be. A reader opens it read-only where it may not write (flock needs no write
    access), and gets None where it cannot be made (a read-only set without lock files: read unlocked)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        if not reader or e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT):
            raise
    try:
        return os.open(path, os.O_RDONLY)
    except OSError:
        return None


def _flock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _held(path: Path) -> bool:
    """Whether anyone holds a lock on `path` (an exclusive lock is tried and given back at once)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return not _flock(fd, fcntl.LOCK_EX)
    finally:
        os.close(fd)


@contextmanager
def folder_lock(folder: Path, what: str, group: str | None = None) -> Iterator[Path]:
    """Hold `folder` for this block; a holder it may not work beside fails at once, naming who has it.

    `what` names the folder's role in the message ("run folder", "shard folder of venice"). Without `group` the
    hold is exclusive. The holders of one `group` (READERS, RANKS) share the folder with each other, never with an
    exclusive holder nor with another group: each holds the folder's lock shared and its group's file
    (`.wtours.lock.<group>`) shared, and finds another group by trying an exclusive lock on that group's file.
    Those steps run one taker at a time (under `.wtours.lock.gate`, held for a moment), so two takers never
    mistake each other's tries for holders. Readers never create the folder, and read a set where they cannot
    make the lock files (a folder they may not write to) without a lock."""
    reader = group == READERS
    if not reader:
        folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    names = [LOCK_FILE, *((f"{LOCK_FILE}.gate", f"{LOCK_FILE}.{group}") if group else ())]
    with ExitStack() as stack:
        fds = [fd for name in names if (fd := _open(folder / name, reader)) is not None]
        for fd in fds:
            stack.callback(os.close, fd)  # closing the descriptor releases its flock
        if len(fds) < len(names):  # a reader of a folder it may not write to, without lock files: unlocked
            yield path
            return
        main, gate, own = (fds[0], None, None) if len(fds) == 1 else fds
        if gate is not None:
            fcntl.flock(gate, fcntl.LOCK_EX)  # blocks for a moment at most: another taker's steps below
        taken = _flock(main, fcntl.LOCK_SH if group else fcntl.LOCK_EX) and (own is None or (
            _flock(own, fcntl.LOCK_SH) and not any(
                _held(other) for other in folder.glob(f"{LOCK_FILE}.*") if other.name not in names)))
        if taken and fcntl.fcntl(main, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY:
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                      "command": " ".join(["wtours", *sys.argv[1:2]]), "group": group}
            os.pwrite(main, json.dumps(holder).ljust(RECORD_BYTES).encode(), 0)
        if gate is not None:
            fcntl.flock(gate, fcntl.LOCK_UN)
        if not taken:
            holder = _holder(path)
            hint = ("a shard set is never read while a run writes, replaces or repairs it, nor written while a run "
                    "reads it" if reader or holder.get("group") == READERS else
                    "two runs into one folder would mix their outputs")
            raise FolderBusyError(f"the {what} {folder} is in use by {_holder_text(holder)}",
                                  f"wait for that run to finish or stop it; {hint} (a run killed with kill -9 frees "
                                  "the folder by itself)")
        yield path


@contextmanager
def reading(folders: Iterable[Path]) -> Iterator[None]:
    """Hold each shard set folder as one of its readers for the block (refused beside a writer of it)."""
    with ExitStack() as stack:
        for folder in dict.fromkeys(Path(f) for f in folders):
            stack.enter_context(folder_lock(folder, "shard set", READERS))
        yield


def refuse_if_written(folder: Path) -> None:
    """For a reader about to report a set as missing or incomplete: a run writing it (`shard --overwrite` first
    removes its index) is named instead (FolderBusyError)."""
    with reading([folder]):
        pass
