"""Clips for any method: T frames `stride` seconds apart within one run, as decoded frames or JPEG bytes.

`Clips` is the public face of the clip loader. It reads what DoRA's `ClipDataset` reads (the same epoch
plan, node and worker split, partial shard reads, shuffle, resume and problem counts: it is a subclass)
and yields `ClipItems` batches of plain clips; a per-clip `transform` turns each clip into what a method
needs, and DoRA's multi-crop views are one such transform (`DoraViews`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from wtours.clips.augment import MultiCropConfig
from wtours.clips.epoch import ClipConfig
from wtours.clips.pipeline import OPENCV_HINT, ClipDataset, ClipLoader, LoaderConfig, make_loader, no_clip_decodes
from wtours.clips.recycle import OutputPool
from wtours.clips.spec import ShardRef, resolve
from wtours.clips.stages import Clip
from wtours.errors import UsageError, WtoursError
from wtours.redact import shown

OUTPUTS = ("uint8", "jpeg")


class ClipUndecodable(ValueError):
    """Raised by a transform for a clip whose frames do not decode: `Clips` counts the clip
    (`problems.bad_clips`) and gives its place in the batch to another clip of the batch."""


@dataclass(frozen=True)
class ClipItem:
    """One clip, as a transform receives it."""

    key: str  # its first frame's sample key, `<video>-<frame:08d>` (layout.sample_key)
    video: str  # the video's slug
    frames: torch.Tensor | list[bytes]  # (T, H, W, 3) uint8 RGB, or the T JPEGs as stored (output="jpeg")
    times: tuple[float, ...]  # T times, seconds from the video's first timestamp
    frame_numbers: tuple[int, ...]  # T frame indexes in the source video
    seed: tuple[int, ...]  # (seed, epoch, rank, batch, row): draw a transform's randomness from it
    # (np.random.default_rng(item.seed)), so a resumed epoch draws what an uninterrupted one did


@dataclass
class ClipItems:
    """A batch of B clips: `data` is the collated clips (or the transform's outputs), beside their metadata.

    Without a transform, `data` is (B, T, H, W, 3) uint8 (a list of B such tensors where the videos'
    frame sizes differ) or, for output="jpeg", B lists of T JPEGs."""

    data: Any
    keys: list[str]
    videos: list[str]
    times: torch.Tensor  # (B, T) float64 seconds
    frame_numbers: torch.Tensor  # (B, T) int64
    problems: dict | None = None  # what its worker skipped since its previous batch (as ClipBatch.problems)

    def __len__(self) -> int:
        return len(self.keys)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ClipItems:
        """Every tensor of the batch (in `data`, also inside lists, tuples and dicts) on `device`."""
        return self._moved(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> ClipItems:
        """Pinned copies of the batch's tensors: the DataLoader calls it with pin_memory=True."""
        return self._moved(torch.Tensor.pin_memory)

    def _moved(self, move: Callable[[torch.Tensor], torch.Tensor]) -> ClipItems:
        return ClipItems(_each_tensor(self.data, move), self.keys, self.videos, move(self.times),
                         move(self.frame_numbers), self.problems)


def _each_tensor(data: Any, move: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(data, torch.Tensor):
        return move(data)
    if isinstance(data, (list, tuple)):
        return type(data)(_each_tensor(item, move) for item in data)
    if isinstance(data, dict):
        return {key: _each_tensor(value, move) for key, value in data.items()}
    return data  # JPEG bytes, strings, numbers


def collate_clips(outputs: list[Any]) -> Any:
    """The default `collate`: equal-shaped tensors stacked, JPEG lists kept as a list, other outputs
    through torch's `default_collate`."""
    if all(isinstance(out, torch.Tensor) for out in outputs):
        if len({out.shape for out in outputs}) == 1:
            return torch.stack(outputs)
        return list(outputs)  # frames of videos of different sizes
    if all(isinstance(out, list) and all(isinstance(j, bytes) for j in out) for out in outputs):
        return list(outputs)
    return default_collate(outputs)


def decoded_frames(jpgs: list[bytes]) -> torch.Tensor:
    """T JPEGs -> (T, H, W, 3) uint8 RGB. Raises ClipUndecodable for a frame that does not decode."""
    try:
        from wtours.clips.jpeg import decode_clip  # OpenCV: loaded where frames are decoded
    except ImportError as exc:  # OpenCV is missing or too old
        raise WtoursError(f"clips cannot be decoded: {exc}", OPENCV_HINT + ", or use output='jpeg'") from exc
    try:
        return torch.stack([frame.permute(1, 2, 0) for frame in decode_clip(jpgs)])  # (3, H, W) views back to rows
    except RuntimeError as error:
        raise ClipUndecodable(str(error)) from error


class Clips(ClipDataset):
    """Batches of clips of `frames` frames `stride` seconds apart within one run of a shard, for any method.

    shards: a SPEC (`spec.resolve`: a slug under `root`, a folder, a pattern, http(s)://, hf://, fsspec,
    pipe:), a list of them, or resolved `ShardRef`s. Each batch holds `batch_size` clips (`ClipItems`);
    `output` "uint8" decodes the frames, "jpeg" keeps the stored bytes. `transform(item)` maps each
    `ClipItem` to what the method needs and `collate` the batch's outputs (default `collate_clips`).

    As DoRA's loader: call `set_epoch(epoch)` before each epoch (`set_epoch(epoch, skip_batches=k)` resumes
    after k batches); `len(clips)` is the exact number of batches of each rank, the same on every rank;
    `plan()` gives the epoch's slots (`epoch.EpochPlan`: each (rank, worker)'s clips and batches). Iterate
    `clips.loader()` (a DataLoader with `workers` processes; the epoch is planned for that many)."""

    def __init__(self, shards: str | Sequence[str] | Sequence[ShardRef], frames: int = 8, stride: float = 1.0, *,
                 output: str = "uint8", transform: Callable[[ClipItem], Any] | None = None,
                 collate: Callable[[list[Any]], Any] = collate_clips, batch_size: int = 1, workers: int = 0,
                 shuffle_buffer: int = 64, clips_per_shard: int | None = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1, root: str | os.PathLike | None = None):
        if output not in OUTPUTS:
            raise UsageError(f"output={output!r}", "use 'uint8' (decoded frames) or 'jpeg' (the stored bytes)")
        if not 0 <= rank < world_size:
            raise UsageError(f"rank {rank} of world size {world_size}", "the rank must be in [0, world_size)")
        if isinstance(shards, str) or not all(isinstance(s, ShardRef) for s in shards):
            refs = resolve(shards, root)  # type: ignore[arg-type]
        else:
            refs = list(shards)  # type: ignore[arg-type]
        # the multi-crop settings of LoaderConfig are DoRA's and unused here (DoraViews carries its own)
        config = LoaderConfig(batch_size=batch_size, workers=workers, shuffle_buffer=shuffle_buffer,
                              clip=ClipConfig(frames, stride, clips_per_shard, seed))
        super().__init__(refs, config, rank=rank, world_size=world_size)
        self.output, self.transform, self.collate = output, transform, collate

    @property
    def recycles_outputs(self) -> bool:
        return False  # a transform's outputs are the caller's: they are never written into lent-back memory

    def loader(self, pin_memory: bool = False) -> ClipLoader:
        """The DataLoader of these clips: `workers` processes, each batch made by one of them."""
        return make_loader(self, pin_memory=pin_memory, reuse_outputs=False)

    def _make_batch(self, batch: list[Clip], index: int, pool: OutputPool | None) -> ClipItems:
        """The batch's clips through the transform. A clip that does not decode is counted and its place
        goes to a clip of the batch that does (the first ones, in turn), so batches keep their size and
        every rank its step count."""
        seed = (self.config.clip.seed, self.epoch, self.rank, index)
        outputs: list[Any] = [None] * len(batch)
        good: list[int] = []
        for row, clip in enumerate(batch):
            try:
                outputs[row] = self._transformed(clip, (*seed, row))
                good.append(row)
            except ClipUndecodable as error:
                self.problems.clip_failed(clip.key, clip.url, error)
        if not good:
            raise no_clip_decodes(f"{batch[0].key} in {shown(batch[0].url)}")
        failed = sorted(set(range(len(batch))) - set(good))
        sources = list(range(len(batch)))
        for k, row in enumerate(failed):
            sources[row] = good[k % len(good)]  # the first clips that decode, again
        clips = [batch[row] for row in sources]
        return ClipItems(self.collate([outputs[row] for row in sources]), [clip.key for clip in clips],
                         [clip.meta[0]["video"] for clip in clips],
                         torch.tensor([[m["t"] for m in clip.meta] for clip in clips], dtype=torch.float64),
                         torch.tensor([[m["frame"] for m in clip.meta] for clip in clips], dtype=torch.int64))

    def _transformed(self, clip: Clip, seed: tuple[int, ...]) -> Any:
        frames = decoded_frames(clip.jpgs) if self.output == "uint8" else list(clip.jpgs)
        item = ClipItem(clip.key, clip.meta[0]["video"], frames, tuple(m["t"] for m in clip.meta),
                        tuple(m["frame"] for m in clip.meta), seed)
        return item.frames if self.transform is None else self.transform(item)


class DoraViews:
    """DoRA's multi-crop as a `Clips` transform (output="jpeg"): [global (T, 3, G, G), local_1 .. local_n
    (T, 3, L, L)] uint8, from the clip window only, drawn from the item's seed. The same operations as the
    training loader's CPU path (`augment_cpu.multicrop_jpegs`), per clip instead of per batch."""

    def __init__(self, config: MultiCropConfig = MultiCropConfig()):
        self.config = config

    def __call__(self, item: ClipItem) -> list[torch.Tensor]:
        from wtours.clips.augment_cpu import multicrop_jpegs  # OpenCV: loaded in the workers that use it

        if not isinstance(item.frames, list):
            raise UsageError("DoraViews decodes the clip window itself", "use it with Clips(..., output='jpeg')")
        result = multicrop_jpegs([item.frames], np.random.default_rng(item.seed), self.config)
        if result.failures:
            raise ClipUndecodable(str(result.failures[0][1]))
        return [view[0] for view in result.views]  # (1, T, 3, S, S) -> (T, 3, S, S)
