"""Per-frame measurements: the analysis grid of each frame -> CIELAB -> lightness statistics and colour histogram."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby, islice
from typing import Any

import numpy as np

from wtours.stats.frames import Frame
from wtours.stats.lightness import frame_lightness, to_lab
from wtours.stats.transitions import colour_histograms
from wtours.stats.transnet import thumbnail

BATCH = 32  # frames converted per rgb2lab call: amortises numpy's per-call cost on small grids


@dataclass
class Measured:
    frame: Frame  # kept (with its pixels) until the detector has seen it
    row: dict[str, Any]  # t, frame, width, height, lightness, lightness_p10/_p50/_p90 (faces, face_boxes: when counted)
    hist: np.ndarray  # (BINS,) uint16 colour histogram of the analysis grid
    thumb: np.ndarray | None = None  # (27, 48, 3) uint8 TransNetV2 input, when --cuts transnetv2


def grid_step(height: int, width: int, pixels: int) -> int:
    """Stride that leaves at least `pixels` pixels on a regular grid (1: every pixel)."""
    return max(1, math.floor(math.sqrt(height * width / pixels))) if pixels else 1


def analysis_grid(rgb: np.ndarray, pixels: int) -> np.ndarray:
    """(H, W, 3) -> (H/s, W/s, 3): every s-th pixel of every s-th row, a view (no averaging).

    Sampling pixels (rather than averaging blocks) keeps their distribution: the mean and percentiles of L* on the
    grid estimate those of the full frame without the narrowing that blending would cause."""
    step = grid_step(rgb.shape[0], rgb.shape[1], pixels)
    return rgb[::step, ::step]


def measure(frames: Iterable[Frame], pixels: int, thumbnails: bool = False) -> Iterator[Measured]:
    """Stage: frames -> Measured, converting batches of same-size frames at once (`thumbnails`: with each frame
    shrunk to TransNetV2's input as well)."""
    for (height, width, _), same_size in groupby(frames, key=lambda f: f.rgb.shape):
        while batch := list(islice(same_size, BATCH)):
            lab = to_lab(np.stack([analysis_grid(f.rgb, pixels) for f in batch]))  # (B, h, w, 3) float32
            light = frame_lightness(lab[..., 0].reshape(len(batch), -1))  # each (B,)
            hists = colour_histograms(lab)  # (B, BINS)
            for k, f in enumerate(batch):
                row = {"t": f.t, "frame": f.frame, "width": width, "height": height}
                if f.faces is not None:
                    row["faces"] = f.faces
                    row["face_boxes"] = None if f.face_boxes is None else [list(box) for box in f.face_boxes]
                row.update({name: float(values[k]) for name, values in light.items()})
                yield Measured(f, row, hists[k], thumbnail(f.rgb) if thumbnails else None)
