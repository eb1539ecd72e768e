"""`wtours viz`'s settings (no torch import: the command derives its options from them)."""

from __future__ import annotations

from dataclasses import dataclass

from wtours.config import NOT_NEGATIVE, POSITIVE, Checked, Range, option
from wtours.errors import UsageError


@dataclass(frozen=True)
class VizConfig(Checked):
    clips: int = option(4, "Clips, spread evenly over the shards.", range=Range(1, 10_000))
    frames: int = option(8, "Frames per clip (T): the grid's rows.", range=Range(1, 1024))
    stride: float = option(1.0, "Seconds between a clip's frames.", range=POSITIVE)
    size: int = option(224, "Side of the square input.", range=Range(16, 4096))  # a multiple of the patch size
    heads: tuple[int, ...] | None = option(None, "Discovery heads (K = their number). Default: drawn with --seed.",
                                           range=NOT_NEGATIVE)  # None: drawn once with `seed`, shared by all clips
    seed: int = option(0, "Seeds the drawn heads.", range=Range(0, 2**32 - 1))
    device: str | None = option(None, "cuda, cuda:1 or cpu (default: cuda when available).")
    gif_ms: int = option(400, "Milliseconds per GIF frame.", range=Range(1, 60_000))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.heads is not None and len(set(self.heads)) != len(self.heads):
            raise UsageError(f"--heads {','.join(map(str, self.heads))} repeats a head", "name distinct heads")
