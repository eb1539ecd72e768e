"""Pixels of `wtours viz`: attention heatmaps, per-object mask overlays, the PNG grid and the GIF frames.

Everything takes uint8 RGB arrays (H, W, 3) and patch-grid maps, and upsamples a patch to a p x p block
(nearest), so a rendered mask is exactly the tracker's binary patch mask: every pixel of an object
cell is either tinted (inside) or darkened (outside), by two fixed formulas."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Distinct colours (Trubetskoy's list): object k is always PALETTE[k % len(PALETTE)]
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180), (245, 130, 48),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40), (128, 0, 0))
MASK_ALPHA = 0.5  # inside a mask: half frame, half the object's colour
OUTSIDE = 0.4  # outside: the frame darkened to this share, so the object stands out
HEADER = 20  # pixels of column labels above the grid
TIMELINE = 6  # pixels of the GIF's progress bar under each frame

# Heatmap colours from low to high attention (viridis' ends and three stops between)
_HEAT_STOPS = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], np.float64)


def object_colour(k: int) -> tuple[int, int, int]:
    return PALETTE[k % len(PALETTE)]


def upsample(grid: np.ndarray, patch: int) -> np.ndarray:
    """(gh, gw) patch map -> (gh*p, gw*p), each patch a constant p x p block."""
    return grid.repeat(patch, axis=0).repeat(patch, axis=1)


def heatmap(attention: np.ndarray, patch: int) -> np.ndarray:
    """(gh, gw) attention -> (gh*p, gw*p, 3) uint8; min..max of this map spans the colour scale."""
    low, high = float(attention.min()), float(attention.max())
    scaled = (attention - low) / (high - low) if high > low else np.zeros_like(attention, np.float64)
    position = scaled * (len(_HEAT_STOPS) - 1)  # (gh, gw) in [0, stops-1]
    below = np.clip(np.floor(position).astype(int), 0, len(_HEAT_STOPS) - 2)
    frac = (position - below)[..., None]
    rgb = _HEAT_STOPS[below] * (1 - frac) + _HEAT_STOPS[below + 1] * frac
    return upsample(np.rint(rgb).astype(np.uint8), patch)


def overlay(frame: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """frame (H, W, 3) uint8, mask (H, W) bool -> inside tinted with `colour`, outside darkened."""
    tinted = np.rint(frame * (1 - MASK_ALPHA) + np.array(colour, np.float64) * MASK_ALPHA).astype(np.uint8)
    dark = np.rint(frame * OUTSIDE).astype(np.uint8)
    return np.where(mask[..., None], tinted, dark)


@dataclass(frozen=True)
class ClipPictures:
    """One clip's inputs to the pictures, all on the model's square input."""

    frames: np.ndarray  # (T, S, S, 3) uint8: the pixels the model saw, before normalisation
    attention: np.ndarray  # (T, h, g, g) [CLS]-to-patch attention of the teacher's last block
    masks: np.ndarray  # (K, T, g, g) bool: the tracker's masks
    patch: int

    def object_cells(self, t: int) -> list[np.ndarray]:
        return [overlay(self.frames[t], upsample(self.masks[k, t], self.patch), object_colour(k))
                for k in range(len(self.masks))]

    def row(self, t: int) -> np.ndarray:
        """(S, S * (1 + h + K), 3): the frame, each head's attention, each object's mask."""
        heads = [heatmap(a, self.patch) for a in self.attention[t]]
        return np.concatenate([self.frames[t], *heads, *self.object_cells(t)], axis=1)


def column_labels(heads: int, head_ids: list[int]) -> list[str]:
    """frame | each of `heads` heads, the tracked ones (`head_ids`) starred | one object per tracked head."""
    return (["frame"] + [f"head {j}{'*' if j in head_ids else ''}" for j in range(heads)]
            + [f"object {k + 1}" for k in range(len(head_ids))])


def grid_image(pictures: ClipPictures, labels: list[str]) -> Image.Image:
    """Rows: frames; columns: frame | h heads' [CLS] attention | K object masks; a label band on top."""
    body = np.concatenate([pictures.row(t) for t in range(len(pictures.frames))], axis=0)
    cell = pictures.frames.shape[1]
    image = Image.new("RGB", (body.shape[1], HEADER + body.shape[0]), "white")
    image.paste(Image.fromarray(body), (0, HEADER))
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    for c, label in enumerate(labels):
        k = c - (len(labels) - len(pictures.masks))  # the object of this column, if it is one
        draw.text((c * cell + 4, 4), label, fill=object_colour(k) if k >= 0 else (0, 0, 0), font=font)
    return image


def gif_frames(pictures: ClipPictures) -> list[Image.Image]:
    """Per frame: the frame and each object's mask side by side, over a progress bar (t + 1) / T."""
    t_count = len(pictures.frames)
    out = []
    for t in range(t_count):
        strip = np.concatenate([pictures.frames[t], *pictures.object_cells(t)], axis=1)
        bar = np.full((TIMELINE, strip.shape[1], 3), 255, np.uint8)
        bar[:, : round(strip.shape[1] * (t + 1) / t_count)] = 64
        out.append(Image.fromarray(np.concatenate([strip, bar], axis=0)))
    return out


def save_gif(frames: list[Image.Image], path, milliseconds: int = 400) -> None:
    """An endlessly looping GIF; the progress bar keeps consecutive frames distinct, so none are merged."""
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=milliseconds, loop=0,
                   optimize=False)
