"""CIELAB lightness L* (scikit-image, sRGB D65): per-frame mean and spread, and its course over a video."""

from __future__ import annotations

from typing import Any

import numpy as np

PERCENTILES = (10, 50, 90)  # the spread reported per frame (lightness_p10, _p50, _p90) and per video
HISTOGRAM_EDGES = np.arange(0, 101, 5)  # L* 0..100 in steps of 5 for the per-video distribution


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 sRGB -> (..., 3) float32 L*a*b*; float32 input keeps skimage in single precision."""
    from skimage.color import rgb2lab

    return rgb2lab(rgb.astype(np.float32) * np.float32(1 / 255))


def frame_lightness(L: np.ndarray) -> dict[str, np.ndarray]:
    """(B, n) L* of each frame's analysis pixels -> per-frame mean and percentiles, each (B,)."""
    spread = zip(PERCENTILES, np.percentile(L, PERCENTILES, axis=1))
    return {"lightness": L.mean(axis=1, dtype=np.float64), **{f"lightness_p{p}": values for p, values in spread}}


def video_lightness(t: np.ndarray, mean: np.ndarray) -> dict[str, Any]:
    """The course of per-frame mean L* over a video: range, distribution and linear trend."""
    counts, _ = np.histogram(mean, bins=HISTOGRAM_EDGES)
    # Slope of a least-squares line through (t, L*): the overall drift, e.g. towards dusk.
    slope = float(np.polyfit(t, mean, 1)[0]) * 3600 if len(t) > 1 and np.ptp(t) > 0 else 0.0
    return {
        "mean": float(mean.mean()),
        "min": float(mean.min()),
        "max": float(mean.max()),
        "std": float(mean.std()),
        **{f"p{p}": float(value) for p, value in zip(PERCENTILES, np.percentile(mean, PERCENTILES))},
        "trend_per_hour": slope,
        "histogram": {"edges": HISTOGRAM_EDGES.tolist(), "counts": counts.tolist()},
    }
