"""What the trainer sees (`wtours inspect --grid`): N clips of the first batch of epoch 0, read by the training
loader (ClipDataset) from the shards, as a PNG grid of each clip's frames and its multi-crop views."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from wtours.clips.augment import MultiCropConfig
from wtours.clips.epoch import ClipConfig
from wtours.clips.pipeline import ClipBatch, ClipDataset, LoaderConfig, RawClipBatch
from wtours.clips.spec import ShardRef
from wtours.errors import WtoursError
from wtours.layout import replace_atomically

CELL = 112  # pixels of one picture in the grid (the local views' default size)
LABEL_WIDTH, HEADER = 80, 18


@dataclass(frozen=True)
class ClipViews:
    key: str
    frames: list[Image.Image]  # the clip's T frames as stored in the shard
    views: list[np.ndarray]  # [global (T, G, G, 3), local_1 (T, L, L, 3), ...] uint8, as the model gets them


def trainer_views(shards: list[ShardRef], clips: int, clip: ClipConfig, multicrop: MultiCropConfig) -> list[ClipViews]:
    """The first `clips` clips of epoch 0 (one batch of the loader, in this process), with their frames (the loader's
    raw batch: the GPU path's input) and the CPU path's multi-crop views of the same clips and draws."""
    batches = {}
    for augment in ("gpu", "cpu"):  # the same clips either way: the clip plan does not depend on where they augment
        dataset = ClipDataset(shards, LoaderConfig(batch_size=clips, workers=0, augment=augment, clip=clip,
                                                   multicrop=multicrop))
        dataset.set_epoch(0)
        batches[augment] = next(iter(dataset), None)
    raw, views = batches["gpu"], batches["cpu"]
    if not isinstance(raw, RawClipBatch) or not isinstance(views, ClipBatch):
        raise WtoursError("the shards give no clip to show", "check the SPEC with `wtours inspect SPEC` (clips per "
                                                              "epoch) or use fewer --clip-frames")
    frames = [Image.open(io.BytesIO(bytes(j.numpy()))).convert("RGB") for j in raw.jpgs]  # B*T, clip-major
    out = []
    for b, key in enumerate(views.keys):  # a clip that does not decode is replaced in `views`: match by key
        i = raw.keys.index(key)
        out.append(ClipViews(key, frames[i * raw.frames:(i + 1) * raw.frames],
                             [_hwc(v[b]) for v in views]))
    return out


def _hwc(view: torch.Tensor) -> np.ndarray:
    return view.permute(0, 2, 3, 1).contiguous().numpy()  # (T, 3, S, S) -> (T, S, S, 3)


def render_grid(clips: list[ClipViews]) -> Image.Image:
    """A block per clip: its key, then rows (frames, global view, local views) of T pictures each."""
    frames = len(clips[0].frames)
    rows = 1 + len(clips[0].views)
    width = LABEL_WIDTH + frames * CELL
    image = Image.new("RGB", (width, len(clips) * (HEADER + rows * CELL)), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    y = 0
    for clip in clips:
        draw.text((4, y + 3), f"clip {clip.key}", fill=(0, 0, 0), font=font)
        y += HEADER
        labels = ["frames", "global", *(f"local {n}" for n in range(1, len(clip.views)))]
        pictures = [clip.frames, *([Image.fromarray(frame) for frame in view] for view in clip.views)]
        for label, row in zip(labels, pictures):
            draw.text((4, y + CELL // 2 - 6), label, fill=(0, 0, 0), font=font)
            for t, picture in enumerate(row):
                picture = picture.copy()
                picture.thumbnail((CELL - 4, CELL - 4))  # aspect kept: a frame is wider than high
                image.paste(picture, (LABEL_WIDTH + t * CELL + 2, y + 2))
            y += CELL
    return image


def write_grid(shards: list[ShardRef], clips: int, path: Path, clip: ClipConfig,
               multicrop: MultiCropConfig) -> list[str]:
    """Render `clips` clips and their views to the PNG `path` (atomically); the clips' keys."""
    shown = trainer_views(shards, clips, clip, multicrop)
    image = render_grid(shown)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, lambda tmp: image.save(tmp, format="PNG"))
    return [c.key for c in shown]
