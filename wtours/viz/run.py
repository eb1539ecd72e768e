"""`wtours viz`: a checkpoint's teacher tracks objects through clips read from shards; pictures per clip.

Each clip is read unaugmented: its T frames, short side resized to `size` and centre-cropped to a
size x size square (the global view's size), ImageNet-normalised, then passed through
`DoRA.teacher_pass`, the trainer's own discovery and tracking, on its own (B = 1)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from wtours.clips.augment import normalize
from wtours.clips.epoch import ClipConfig, ShardRead, clip_starts
from wtours.clips.spec import ShardRef, local_folders, resolve
from wtours.clips.stages import Clip, Problems, shard_clips
from wtours.dora import DoRA
from wtours.errors import IncompleteError, UsageError, WtoursError
from wtours.layout import INDEX_FILE, replace_atomically, write_json_atomic
from wtours.locks import reading
from wtours.models.checkpoint import backbone_state, infer_arch, read_weights, strip_prefix
from wtours.models.vit import cls_attention
from wtours.redact import shown
from wtours.system import resolve_device
from wtours.viz.config import VizConfig
from wtours.viz.render import (
    HEADER,
    MASK_ALPHA,
    OUTSIDE,
    ClipPictures,
    column_labels,
    gif_frames,
    grid_image,
    object_colour,
    save_gif,
)


def load_model(checkpoint: str | os.PathLike) -> DoRA:
    """A DoRA model shaped after a training checkpoint's teacher (ours or the authors'), weights loaded."""
    raw = read_weights(checkpoint)
    if "teacher" not in raw:
        raise UsageError(f"{checkpoint} has no 'teacher' network",
                          "viz needs a training checkpoint (wtours train's checkpoint.pth or the authors' .pth), "
                          "not an exported backbone: the tracker runs the teacher")
    arch = infer_arch(backbone_state(raw, "teacher"))
    head = strip_prefix(raw["teacher"]).get("head.last_layer.weight_v")
    if head is None:
        raise UsageError(f"{checkpoint}: its teacher has no DINO head ('head.last_layer.weight_v')",
                          "viz needs a DoRA/DINO training checkpoint (student and teacher with their heads)")
    config = raw.get("config")
    recorded: dict[str, Any] = config if isinstance(config, dict) else {}
    model_config: dict[str, Any] = recorded["model"] if isinstance(recorded.get("model"), dict) else recorded
    objects = model_config.get("objects", 3)  # our runs record K; the authors used 3
    model = DoRA(arch, out_dim=head.shape[0], n_local=0, objects=objects, drop_path=0.0)
    try:
        model.load_official_checkpoint(raw)
    except (KeyError, RuntimeError, ValueError) as e:
        raise WtoursError(f"{checkpoint}: its weights do not load into a {arch} DoRA model "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e})",
                          "pass the checkpoint.pth of a wtours train run, or the authors' DoRA .pth") from e
    return model.eval()


def prepare_out(out: str | os.PathLike) -> Path:
    """The output folder, made (with its parents) before any work, or a clear error naming the file
    that stands in its way."""
    out = Path(out)
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"--out {out}: {parent} is a file, not a folder",
                              "choose another --out (a folder, new or existing)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def pick_starts(shards: list[ShardRef], config: ClipConfig, count: int) -> dict[str, set[int]]:
    """`count` clip starts spread evenly over all valid starts of all shards, in time order."""
    candidates = [(ref.url, start) for ref in shards for start in clip_starts(ref, config)]
    if not candidates:
        raise WtoursError(f"no clip of {config.frames} frames {config.stride} s apart fits in these shards",
                          "use fewer --frames or a shorter --stride")
    n = min(count, len(candidates))
    chosen: dict[str, set[int]] = {}
    for i in range(n):
        url, start = candidates[int((i + 0.5) * len(candidates) / n)]  # the middle of each of n equal parts
        chosen.setdefault(url, set()).add(start)
    return chosen


def read_clips(shards: list[ShardRef], starts: dict[str, set[int]], config: ClipConfig,
               problems: Problems) -> Iterator[Clip]:
    """The clips at `starts`, through the trainer's own stages (open -> tar samples -> clips); what cannot
    be read is skipped, counted in `problems` and warned about."""
    reads = [ShardRead.needed(r, starts[r.url], config) for r in shards if r.url in starts]
    yield from shard_clips(reads, config, problems)


def unread(starts: dict[str, set[int]], records: list[dict[str, Any]], problems: Problems) -> str | None:
    """What of the chosen clips could not be read, and why as far as known; None when every clip was drawn.
    (A damaged shard may also just end early: a zeroed stretch reads as the end of a tar.)"""
    missing = {url: len(s) - sum(r["url"] == url for r in records) for url, s in starts.items()}
    missing = {url: n for url, n in missing.items() if n > 0}
    if not missing:
        return None
    why = [f"unreadable: {error.splitlines()[0]}" for error in list(problems.bad_shards.values())[:3]]
    why += [f"{n} damaged samples" for n in [problems.bad_samples] if n]
    why += [f"{n} clips with a frame that does not decode" for n in [problems.bad_clips] if n]
    return (f"{sum(missing.values())} of {sum(map(len, starts.values()))} clips could not be read from "
            f"{', '.join(shown(url) for url in list(missing)[:3])}{' ...' if len(missing) > 3 else ''}"
            f" ({'; '.join(why) or 'the shard ends before them'})")


def square_frames(jpgs: list[bytes], size: int) -> np.ndarray:
    """JPEGs -> (T, size, size, 3) uint8: short side resized to `size` (bicubic), centre-cropped square."""
    return np.stack([np.asarray(ImageOps.fit(Image.open(io.BytesIO(j)).convert("RGB"), (size, size),
                                             Image.Resampling.BICUBIC)) for j in jpgs])


@torch.no_grad()
def track_clip(model: DoRA, view: torch.Tensor, heads: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """view (1, T, 3, S, S) -> [CLS] attention (T, h, g, g) and the tracker's masks (K, T, g, g) bool."""
    _, t, _, s, _ = view.shape
    g = s // model.patch_size
    _, _, masks = model.teacher_pass(view, heads)  # (K, 1, T, N): the trainer's discovery and tracking
    last = model.teacher.backbone.forward_last_attention(view[0])  # (T, ...) the same last block
    attention = cls_attention(last.queries, last.keys)[:, :, 1:]  # (T, h, N)
    return (attention.reshape(t, -1, g, g).float().cpu().numpy(),
            masks[:, 0].reshape(len(heads), t, g, g).cpu().numpy())


def choose_heads(model: DoRA, config: VizConfig) -> torch.Tensor:
    available = model.teacher.backbone.config.heads
    if config.heads is None:
        return model.draw_heads(torch.Generator().manual_seed(config.seed))
    if not config.heads or not all(0 <= h < available for h in config.heads):
        raise UsageError(f"--heads {','.join(map(str, config.heads))}: this model has heads 0..{available - 1}",
                          "name distinct heads of the teacher's last block")
    return torch.tensor(config.heads)


def render_clip(model: DoRA, clip: Clip, frames: np.ndarray, heads: torch.Tensor, labels: list[str], out: Path,
                config: VizConfig) -> dict[str, Any]:
    """Track one clip (its `square_frames`), write its PNG grid and GIF, and return its index record."""
    # (T, S, S, 3) uint8 -> (1, T, 3, S, S) ImageNet-normalised float: the unaugmented global view
    view = normalize(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0)[None]
    attention, masks = track_clip(model, view.to(heads.device), heads)
    pictures = ClipPictures(frames, attention, masks, model.patch_size)
    png, gif = out / f"clip-{clip.key}.png", out / f"clip-{clip.key}.gif"
    grid = grid_image(pictures, labels)
    replace_atomically(png, lambda tmp: grid.save(tmp, format="PNG"))
    replace_atomically(gif, lambda tmp: save_gif(gif_frames(pictures), tmp, config.gif_ms))
    return {"key": clip.key, "png": png.name, "gif": gif.name, "shard": shown(clip.url), "url": clip.url,
            "times": [m["t"] for m in clip.meta], "source_frames": [m["frame"] for m in clip.meta],
            "coverage": masks.reshape(len(masks), len(frames), -1).mean(axis=2).round(4).tolist()}  # [k][t]


def visualise(checkpoint: str | os.PathLike, shards: str | list[str], out: str | os.PathLike,
              config: VizConfig = VizConfig(), root: str | os.PathLike | None = None,
              say: Callable[[str], None] = print) -> dict[str, Any]:
    """Render clip-<key>.png and clip-<key>.gif for `config.clips` clips, and index.json; returns the index.
    Clips that cannot be read (a damaged shard, a frame that does not decode) are skipped and warned about;
    then, with no clip drawn, a WtoursError, else an IncompleteError after index.json of those drawn."""
    device = resolve_device(config.device)
    out = prepare_out(out)  # first: a wrong --out fails before the model loads
    model = load_model(checkpoint).to(device)
    if config.size % model.patch_size:
        raise UsageError(f"--size {config.size} is not a multiple of the patch size {model.patch_size}", "use 224")
    heads = choose_heads(model, config)
    refs = resolve(shards, root)
    clip_config = ClipConfig(config.frames, config.stride)
    labels = column_labels(model.teacher.backbone.config.heads, heads.tolist())
    records, problems = [], Problems()
    starts = pick_starts(refs, clip_config, config.clips)
    with reading(local_folders(refs)):  # a local set is held as its reader: no run replaces it meanwhile
        for clip in read_clips(refs, starts, clip_config, problems):
            try:
                frames = square_frames(clip.jpgs, config.size)
            except (OSError, ValueError) as e:  # not an image, truncated: PIL's errors are OSErrors
                problems.clip_failed(clip.key, clip.url, e)
                continue
            records.append(render_clip(model, clip, frames, heads.to(device), labels, out, config))
            say(f"{records[-1]['png']}: objects cover "
                f"{', '.join(f'{sum(c) / len(c):.0%}' for c in records[-1]['coverage'])} of the frames")
    damage = unread(starts, records, problems)
    hint = ("check the shards where they are stored (`wtours verify`, and `--repair` for a local set), fetch "
            "them again, or pick other --shards")
    if damage and not records:
        raise WtoursError(f"no picture written: {damage}", hint)
    records = [{k: v for k, v in r.items() if k != "url"} for r in records]  # the shown form only is kept
    index = {"checkpoint": str(checkpoint), "arch": model.arch, "patch_size": model.patch_size,
             "heads": heads.tolist(), "objects": len(heads), "frames": config.frames, "stride": config.stride,
             "size": config.size, "cell": config.size, "header": HEADER, "columns": labels,
             "colours": [list(object_colour(k)) for k in range(len(heads))], "mask_alpha": MASK_ALPHA,
             "outside": OUTSIDE, "gif_ms": config.gif_ms, "clips": records}
    write_json_atomic(out / INDEX_FILE, index)
    if damage:
        raise IncompleteError(f"wrote {len(records)} clip pictures and {out / INDEX_FILE}; {damage}", hint)
    return index
