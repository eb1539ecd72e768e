"""Checkpoints: the authors' layout ('student', 'teacher', 'dora_loss') plus our run state, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any, cast

import torch

from wtours import __version__
from wtours.dora.model import read_checkpoint
from wtours.layout import replace_atomically

CHECKPOINT_FILE = "checkpoint.pth"


class _KeepingErrors:
    """A file whose write errors are kept: torch.save turns an exception raised by a write (a full disk's
    OSError, a Ctrl-C's KeyboardInterrupt) into a bare RuntimeError ("unexpected pos ..."); the kept one
    is raised instead."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except BaseException as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def _torch_save(obj: Any, path: Path) -> None:
    with open(path, "wb") as file:
        writer = _KeepingErrors(file)
        try:
            torch.save(obj, cast(IO[bytes], writer))
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None
            raise


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save through the one atomic writer: a kill never leaves half a file, and a failed write
    (ENOSPC, EROFS, ...) raises its OSError, leaves no temporary and keeps the previous checkpoint."""
    replace_atomically(path, lambda tmp: _torch_save({**state, "wtours": __version__}, tmp))


def latest_checkpoint(out: Path) -> Path | None:
    path = out / CHECKPOINT_FILE
    return path if path.is_file() else None


load_checkpoint = read_checkpoint
