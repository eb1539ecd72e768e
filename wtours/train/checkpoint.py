"""Checkpoints: the authors' layout ('student', 'teacher', 'dora_loss') plus our run state, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from wtours import __version__
from wtours.dora.model import read_checkpoint
from wtours.layout import replace_atomically

CHECKPOINT_FILE = "checkpoint.pth"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save through the one atomic writer: a kill never leaves half a file."""
    replace_atomically(path, lambda tmp: torch.save({**state, "wtours": __version__}, tmp))


def latest_checkpoint(out: Path) -> Path | None:
    path = out / CHECKPOINT_FILE
    return path if path.is_file() else None


load_checkpoint = read_checkpoint
