"""Exclusive use of an output folder: one `wtours train` per run folder, one `shard` per shard folder.

The lock is an advisory `flock` on a file inside the folder. The kernel drops it when the holder
exits, however it exits (kill -9 included), so a lock left by a dead run never blocks the next one;
the file only says who held it last, for the message a second run prints."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from wtours.errors import WtoursError

LOCK_FILE = ".wtours.lock"


class FolderBusyError(WtoursError):
    """Another live process holds the folder (a runtime failure: exit 1, rerun when it is done)."""


def _holder_text(path: Path) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "another process"
    if not holder:
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')} ({holder.get('command')}, since {started})"


@contextmanager
def folder_lock(folder: Path, what: str, shared: bool = False) -> Iterator[Path]:
    """Hold `folder` exclusively for this block; a second holder fails at once with who has it.

    `what` names the folder's role in the message ("run folder", "shard folder of venice"). `shared`: several shared
    holders may work in the folder together (the ranks of a multi-node shard run), but never beside an exclusive one."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusyError(
                f"the {what} {folder} is in use by {_holder_text(path)}",
                "wait for that run to finish or stop it; two runs into one folder would mix their outputs "
                "(a run killed with kill -9 frees the folder by itself)") from None
        if not shared:  # shared holders leave the record alone: it names the exclusive holder
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                      "command": " ".join(["wtours", *sys.argv[1:2]])}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the flock
