"""The k-NN evaluation's settings (no torch import: `wtours eval knn` derives its options from them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from wtours.config import POSITIVE, Range, check_fields

IMAGE_SIDE = Range(16, 4096)  # pixels of the resize and the crop


@dataclass(frozen=True)
class KnnConfig:
    k: int = field(default=20, metadata={"help": "Neighbours voting for each val image.", "range": Range(1, 100_000)})
    temperature: float = field(default=0.07, metadata={"help": "Vote weight exp(cosine / T).", "range": POSITIVE})
    resize: int = field(default=256, metadata={"help": "Short side the images are resized to.", "range": IMAGE_SIDE})
    crop: int = field(default=224, metadata={"help": "Side of the centre crop.", "range": IMAGE_SIDE})
    batch_size: int = field(default=128, metadata={  # DINO's per-GPU default
        "help": "Images per forward pass.", "range": Range(1, 1 << 16)})
    workers: int = field(default=0, metadata={
        "help": "Image-decoding processes (0: in this process).", "range": Range(0, 1024)})
    chunk: int = field(default=256, metadata={  # bounds memory at chunk x train images
        "help": "Val images per similarity block.", "range": Range(1, 1 << 20)})

    def __post_init__(self) -> None:
        check_fields(self)
