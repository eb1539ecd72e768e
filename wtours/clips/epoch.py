"""Clip arithmetic from shard indexes: valid starts, epoch length, and the per-epoch work plan.

A clip is T frames `stride` seconds apart (T grid cells `step = stride * fps` apart) inside one run of
consecutive cells of one shard, so it never spans a dropped stretch. All here is a pure function of
(shards, config, seed, epoch): every rank and worker computes the same plan before a shard is opened.
The plan is exact: every clip start of the epoch goes to one (rank, worker) slot, in a contiguous
stretch of the epoch's shard order (a slot reads parts of one or a few shards); the only repeats are
the padding that gives every rank the same number of whole batches (at most one batch per rank).

An epoch is one pass over the grid's clip starts, or (ClipConfig.epoch_clips, `--epoch-length
source-frames`) as many clips as the authors' loader has starts in the source video, one per source frame:
whole passes over the grid's starts, then a seeded subset of one more pass (docs/dora.md, "The authors'
epoch")."""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass

from wtours.clips.spec import ShardRef, ShardSet
from wtours.errors import UsageError, WtoursError
from wtours.redact import shown


@dataclass(frozen=True)
class ClipConfig:
    frames: int = 8  # T
    stride: float = 1.0  # seconds between consecutive frames of a clip (the authors' 60 frames at 60 fps)
    clips_per_shard: int | None = None  # a random subset of starts per shard and epoch; None: every start
    seed: int = 0
    epoch_clips: int | None = None  # the authors' clip starts per epoch (source_clips_per_epoch); None: one grid pass

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise UsageError("--clip-frames must be at least 1", "DoRA uses 8")
        if self.stride <= 0:
            raise UsageError("--clip-stride must be positive", "DoRA uses 1.0 s")
        if self.clips_per_shard is not None and self.clips_per_shard < 1:
            raise UsageError("--clips-per-shard must be at least 1", "or leave it out for every clip")
        if self.epoch_clips is not None and self.clips_per_shard is not None:
            raise UsageError("--clips-per-shard and --epoch-length source-frames both set the epoch's clips",
                             "pass one of them")


def cell_step(stride: float, fps: float) -> int:
    """Grid cells between consecutive clip frames; the stride must be a whole number of cells."""
    step = stride * fps
    if step < 1 - 1e-6 or abs(step - round(step)) > 1e-6:
        raise WtoursError(f"clip stride {stride} s is not a whole number of frames at the shards' {fps} fps",
                          f"use a multiple of {1 / fps:g} s, or reshard with another --fps")
    return round(step)


def clip_span(shard: ShardRef, config: ClipConfig) -> int:
    """Grid cells from a clip's first frame to its last."""
    return (config.frames - 1) * cell_step(config.stride, shard.fps)


def clip_starts(shard: ShardRef, config: ClipConfig) -> list[int]:
    """Every start cell whose clip lies inside one run of the shard."""
    span = clip_span(shard, config)
    return [c for first, last in shard.entry.cell_runs for c in range(first, last - span + 1)]


def epoch_starts(shard: ShardRef, config: ClipConfig, epoch: int) -> list[int]:
    """The starts used in one epoch: all of them, or a seeded subset of `clips_per_shard`."""
    starts = clip_starts(shard, config)
    if config.clips_per_shard is None or config.clips_per_shard >= len(starts):
        return starts
    rng = random.Random(f"{config.seed}:{epoch}:{shown(shard.url)}")  # a rotated password keeps the subset
    return sorted(rng.sample(starts, config.clips_per_shard))


def clips_per_epoch(shards: list[ShardRef], config: ClipConfig) -> int:
    """Exact: the subset size (min(starts, clips_per_shard)) does not depend on the epoch; with `epoch_clips`,
    the authors' count (the clips read are its whole batches: `authors_steps`)."""
    if config.epoch_clips is not None:
        return config.epoch_clips
    return sum(len(clip_starts(shard, config)[:config.clips_per_shard]) for shard in shards)


def authors_clip_starts(source_frames: int, frames: int, step: int) -> int:
    """Clips per epoch of the authors' loader: `WT_dataset_1vid.__len__` in their WTDataloader.py is
    total frames - frames x step_between_clips (a start per source frame; T x step, not (T - 1) x step, is
    held back at the end)."""
    return max(0, source_frames - frames * step)


def authors_steps(clips: int, ranks: int, batch_size: int) -> int:
    """Optimiser steps per epoch of the authors' main.py: DistributedSampler gives each rank ceil(clips / ranks)
    (padding by repeating), and DataLoader(drop_last=True) keeps its whole batches."""
    return math.ceil(clips / ranks) // batch_size


def source_step(stride: float, source_fps: float) -> int:
    """Source frames between a clip's frames (the authors give it in frames: 60 at 60 fps for 1 s)."""
    return max(1, round(stride * source_fps))


def source_clips_per_epoch(sets: Iterable[ShardSet], config: ClipConfig) -> int:
    """The authors' clip starts over the source videos of whole shard sets: `authors_clip_starts` of each
    set's source frames (ShardIndex.source_frames), summed over the sets."""
    total = 0
    for found in sets:
        if len(found.refs) != len(found.index.shards):
            raise UsageError(f"--epoch-length source-frames counts the clip starts of a whole video, but the SPEC "
                             f"names {len(found.refs)} of the {len(found.index.shards)} shards of {found.index.slug}",
                             "give the set's slug or folder, or use --epoch-length grid")
        video = found.index.video
        total += authors_clip_starts(found.index.source_frames, config.frames, source_step(config.stride, video.fps))
    if total == 0:
        raise UsageError(f"--epoch-length source-frames: no clip of {config.frames} frames {config.stride:g} s apart "
                         "fits in these videos", "use fewer --clip-frames or a shorter --clip-stride")
    return total


def sample_index(shard: ShardRef, cell: int) -> int:
    """Position in the shard (0-based, time order) of the sample of grid cell `cell`, from the cell runs."""
    before = 0
    for first, last in shard.entry.cell_runs:
        if first <= cell <= last:
            return before + cell - first
        before += last - first + 1
    raise WtoursError(f"{shown(shard.url)}: cell {cell} is not among the shard's samples",
                      "the index and the plan disagree: rerun `wtours shard` for this video")


@dataclass(frozen=True)
class ShardRead:
    """The part of one shard a slot reads: the clip starts it forms there and the samples they need.

    Samples [first_sample, stop_sample) hold every frame of those clips; a reader with the shard's
    byte offsets (index version 2) seeks there (a Range request for http), else it reads from the start
    and skips. stop_sample None: to the shard's end."""

    ref: ShardRef
    starts: frozenset[int]
    first_sample: int = 0
    stop_sample: int | None = None

    @classmethod
    def whole(cls, ref: ShardRef, starts: Iterable[int]) -> ShardRead:
        return cls(ref, frozenset(starts))

    @classmethod
    def needed(cls, ref: ShardRef, starts: Iterable[int], config: ClipConfig) -> ShardRead:
        """Only the samples from the first start to the last clip's last frame."""
        starts = frozenset(starts)
        first = sample_index(ref, min(starts))
        stop = sample_index(ref, max(starts) + clip_span(ref, config)) + 1
        return cls(ref, starts, first, None if stop >= ref.entry.samples else stop)


@dataclass(frozen=True)
class SlotPlan:
    """One (rank, worker) slot: positions [first, stop) of the epoch's clip sequence, then `padding`
    (positions read again) so that it yields exactly `batches` whole batches."""

    first: int
    stop: int
    padding: tuple[int, ...]
    batches: int

    @property
    def clips(self) -> int:
        return self.stop - self.first

    @property
    def clips_read(self) -> int:
        return self.clips + len(self.padding)


@dataclass(frozen=True)
class EpochPlan:
    """The epoch's clip sequence (shards in this epoch's order, each with its starts) cut into slots."""

    shards: tuple[ShardRef, ...]  # this epoch's shard order (the authors' epoch: one order per grid pass)
    starts: tuple[tuple[int, ...], ...]  # each of those shards' clip starts this epoch, ascending
    bounds: tuple[int, ...]  # sequence position of each shard's first clip, then the total
    slots: tuple[SlotPlan, ...]  # slot = rank * workers + worker
    steps: int  # batches per rank, the same on every rank
    config: ClipConfig

    @property
    def total_clips(self) -> int:
        """The epoch's clips: distinct, but for the grid passes an authors' epoch repeats."""
        return self.bounds[-1]

    @property
    def clips_read(self) -> int:
        """Clips all slots read together: the distinct ones plus the padding (< one batch per rank)."""
        return sum(s.clips_read for s in self.slots)

    def clip_at(self, position: int) -> tuple[ShardRef, int]:
        shard = bisect.bisect_right(self.bounds, position) - 1
        return self.shards[shard], self.starts[shard][position - self.bounds[shard]]

    def reads(self, slot: int) -> list[ShardRead]:
        """What a slot opens, in order: its own stretch, then its padding."""
        plan = self.slots[slot]
        return self._reads(range(plan.first, plan.stop)) + self._reads(plan.padding)

    def _reads(self, positions: Iterable[int]) -> list[ShardRead]:
        groups: list[tuple[ShardRef, list[int]]] = []
        for position in positions:
            shard, start = self.clip_at(position)
            # a new read where the shard changes or a start comes again (padding that wraps around)
            if not groups or groups[-1][0] is not shard or start <= groups[-1][1][-1]:
                groups.append((shard, []))
            groups[-1][1].append(start)
        return [ShardRead.needed(shard, starts, self.config) for shard, starts in groups]


def plan_epoch(shards: list[ShardRef], config: ClipConfig, epoch: int, ranks: int = 1, workers: int = 1,
               batch_size: int = 1) -> EpochPlan:
    """Every clip start of the epoch in exactly one slot; every rank the same number of whole batches.

    1. Shuffle the shards with (seed, epoch) and lay their starts out in that order: the epoch's
       clip sequence of N clips (a clip lives in one shard).
    2. Cut it into `ranks` contiguous pieces of N // ranks or N // ranks + 1 clips.
    3. Steps per rank = ceil(ceil(N / ranks) / B). The DataLoader takes whole batches from its
       workers in turn, so batch j of a rank is made by worker j % workers: worker w makes
       len(range(w, steps, workers)) batches. A rank's padding (steps * B minus its clips, at most B)
       is spread over its workers, and each worker takes the next contiguous stretch of the rank's
       piece that fills its batches; it pads by reading the first clips of its own stretch again (a
       worker with no clips of its own, possible only when N < ranks * B, repeats clips from the
       rank's position in the sequence).
    Slots of a rank differ by at most one batch (whole batches per worker) and ranks by at most one
    clip; clips read = N + padding < N + ranks * B. With `config.epoch_clips` the sequence is
    `authors_sequence`'s: whole batches on every rank, so no padding."""
    if ranks < 1 or workers < 1 or batch_size < 1:
        raise WtoursError(f"cannot plan an epoch for {ranks} rank(s) x {workers} worker(s), batch size {batch_size}",
                          "ranks, workers and the batch size must be at least 1")
    if config.epoch_clips is None:
        order = shard_order(len(shards), config, epoch)
        sequence = [(shards[i], tuple(epoch_starts(shards[i], config, epoch))) for i in order]
    else:
        sequence = authors_sequence(shards, config, epoch, authors_steps(config.epoch_clips, ranks, batch_size)
                                    * ranks * batch_size)
    starts = tuple(s for _, s in sequence)
    bounds = tuple(itertools.accumulate(map(len, starts), initial=0))
    total = bounds[-1]
    if total == 0 and config.epoch_clips is not None and any(clip_starts(shard, config) for shard in shards):
        raise UsageError(f"--epoch-length source-frames: {config.epoch_clips} clip starts give no whole batch of "
                         f"{batch_size} on each of {ranks} process(es)", "lower --batch-size, or use fewer processes")
    if total == 0:
        raise WtoursError(f"no clip of {config.frames} frames {config.stride} s apart fits in these shards",
                          "use fewer --clip-frames, a shorter --clip-stride, or shards with more samples per shard")
    steps = math.ceil(math.ceil(total / ranks) / batch_size)
    slots: list[SlotPlan] = []
    rank_cuts = [total * k // ranks for k in range(ranks + 1)]  # piece sizes differ by at most one
    for rank in range(ranks):
        lo, hi = rank_cuts[rank], rank_cuts[rank + 1]
        batches = [len(range(w, steps, workers)) for w in range(workers)]
        active = [w for w in range(workers) if batches[w]]
        pad = steps * batch_size - (hi - lo)
        pads = [0] * workers
        for k, w in enumerate(active):  # spread evenly; a worker's padding never exceeds one batch
            pads[w] = pad // len(active) + (k < pad % len(active))
        position = lo
        for w in range(workers):
            own = batches[w] * batch_size - pads[w]
            first, position = position, position + own
            padding = tuple(first + k % own if own else (lo + k) % total for k in range(pads[w]))
            slots.append(SlotPlan(first, position, padding, batches[w]))
    return EpochPlan(tuple(s for s, _ in sequence), starts, bounds, tuple(slots), steps, config)


def shard_order(count: int, config: ClipConfig, epoch: int, grid_pass: int = 0) -> list[int]:
    """The shards' order in one pass of an epoch, seeded by (seed, epoch, pass)."""
    order = list(range(count))
    random.Random(f"{config.seed}:{epoch}:shards" + (f":{grid_pass}" if grid_pass else "")).shuffle(order)
    return order


def authors_sequence(shards: list[ShardRef], config: ClipConfig, epoch: int,
                     wanted: int) -> list[tuple[ShardRef, tuple[int, ...]]]:
    """`wanted` clips from the grid's starts: whole passes over all of them (each pass in its own seeded shard
    order), then a seeded subset, without repeats, of one more pass. A grid start thus comes wanted // starts
    or that + 1 times in an epoch (each time with new crops); the authors' loader has a start per source frame
    instead, 1 / fps apart (docs/dora.md, "The authors' epoch")."""
    grid = [tuple(clip_starts(shard, config)) for shard in shards]
    size = sum(map(len, grid))
    if size == 0 or wanted == 0:
        return []
    passes, rest = divmod(wanted, size)
    sequence = [(shards[i], grid[i]) for p in range(passes) for i in shard_order(len(shards), config, epoch, p)]
    if rest:
        chosen = sorted(random.Random(f"{config.seed}:{epoch}:rest").sample(range(size), rest))
        position = 0  # of the pass's first start in the shard at hand
        for i in shard_order(len(shards), config, epoch, passes):
            lo, hi = bisect.bisect_left(chosen, position), bisect.bisect_left(chosen, position + len(grid[i]))
            if hi > lo:
                sequence.append((shards[i], tuple(grid[i][k - position] for k in chosen[lo:hi])))
            position += len(grid[i])
    return sequence
