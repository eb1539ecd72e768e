"""Checkpoints: the authors' layout ('student', 'teacher', 'dora_loss') plus our run state, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from wtours import __version__
from wtours.dora.model import read_checkpoint

CHECKPOINT_FILE = "checkpoint.pth"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary name in the same folder, fsync, rename: a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save({**state, "wtours": __version__}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def latest_checkpoint(out: Path) -> Path | None:
    path = out / CHECKPOINT_FILE
    return path if path.is_file() else None


load_checkpoint = read_checkpoint
