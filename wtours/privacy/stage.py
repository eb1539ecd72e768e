"""The shard pipeline's blur stage: frames to store -> the same frames with faces hidden, counted."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from wtours.privacy.blur import anonymise
from wtours.privacy.detect import FaceDetector, make_detector
from wtours.privacy.params import BlurParams


@dataclass(frozen=True)
class FaceBlur:
    """A detector and how to hide what it finds; one per run, shared by its segments (thread-safe)."""

    detector: FaceDetector
    mode: str = "blur"
    scale: float = 1.3

    @classmethod
    def from_params(cls, params: BlurParams) -> FaceBlur:
        """Loads the model now, so a missing `privacy` extra fails before any file is written."""
        return cls(make_detector(params.detector, params.threshold, params.upscale), params.mode, params.scale)

    def apply(self, rgb: np.ndarray) -> tuple[np.ndarray, int]:
        """(frame with faces hidden, faces found); rgb: (H, W, 3) uint8."""
        found = self.detector.detect(rgb)
        if not len(found):
            return rgb, 0
        return anonymise(rgb, found.boxes, self.mode, self.scale), len(found)


def blur_frames(frames: Iterable, blur: FaceBlur, counts: list[int]) -> Iterator:
    """Stage: frames (anything with an `rgb` field, e.g. DecodedFrame) -> the same frames with faces hidden.
    Appends each frame's face count to `counts`, in order (the index records them per sample)."""
    for frame in frames:
        rgb, faces = blur.apply(frame.rgb)
        counts.append(faces)
        yield frame if rgb is frame.rgb else dataclasses.replace(frame, rgb=rgb)
