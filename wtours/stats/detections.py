"""What a class-counting detector is: a batch of RGB frames in, one `Detections` per frame out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Detections:
    """What a detector found in one frame, above its score threshold."""

    labels: tuple[str, ...]  # one class name per object
    scores: tuple[float, ...]

    @property
    def objects(self) -> int:
        return len(self.labels)

    @property
    def classes(self) -> int:
        return len(set(self.labels))


class Detector(Protocol):
    """Anything that maps a batch of RGB frames to detections can count classes."""

    name: str  # recorded in summary.json (and part of the resume key)
    vocabulary: str  # e.g. "COCO (80 classes)"

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """(H, W, 3) uint8 frames -> one Detections per frame, in order."""
