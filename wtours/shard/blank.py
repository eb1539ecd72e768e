"""Blank frames (black, white, a frozen single colour) are kept out of the shards."""

from __future__ import annotations

import numpy as np

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def luma_spread(rgb: np.ndarray, step: int = 4) -> float:
    """Standard deviation of luma (0..255) on a strided subsample: cheap, and enough to tell a blank."""
    sample = rgb[::step, ::step].astype(np.float32)  # (h/step, w/step, 3)
    return float((sample @ _LUMA).std())


def is_blank(rgb: np.ndarray, threshold: float) -> bool:
    return luma_spread(rgb) < threshold
