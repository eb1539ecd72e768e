"""`wtours viz`'s settings (no torch import: the command derives its options from them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from wtours.config import NOT_NEGATIVE, POSITIVE, Range, check_fields
from wtours.errors import UsageError


@dataclass(frozen=True)
class VizConfig:
    clips: int = field(default=4, metadata={"help": "Clips, spread evenly over the shards.", "range": Range(1, 10_000)})
    frames: int = field(default=8, metadata={"help": "Frames per clip (T): the grid's rows.", "range": Range(1, 1024)})
    stride: float = field(default=1.0, metadata={"help": "Seconds between a clip's frames.", "range": POSITIVE})
    size: int = field(default=224, metadata={  # a multiple of the patch size
        "help": "Side of the square input.", "range": Range(16, 4096)})
    heads: tuple[int, ...] | None = field(default=None, metadata={  # None: drawn once with `seed`, shared by all clips
        "help": "Discovery heads (K = their number). Default: drawn with --seed.", "range": NOT_NEGATIVE})
    seed: int = field(default=0, metadata={"help": "Seeds the drawn heads.", "range": Range(0, 2**32 - 1)})
    device: str | None = field(default=None, metadata={"help": "cuda, cuda:1 or cpu (default: cuda when available)."})
    gif_ms: int = field(default=400, metadata={"help": "Milliseconds per GIF frame.", "range": Range(1, 60_000)})

    def __post_init__(self) -> None:
        check_fields(self)
        if self.heads is not None and len(set(self.heads)) != len(self.heads):
            raise UsageError(f"--heads {','.join(map(str, self.heads))} repeats a head", "name distinct heads")
