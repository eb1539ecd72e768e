"""Clip arithmetic from shard indexes: valid starts, epoch length, and the per-epoch work plan.

A clip is T frames `stride` seconds apart, i.e. T grid cells `step = stride * fps` apart. It must lie
inside one run of consecutive cells of one shard, so it never spans a dropped stretch. Everything
here is a pure function of (shards, config, seed, epoch): every rank and worker computes the same
plan, and the epoch length is known before a shard is opened."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from wtours.clips.spec import ShardRef
from wtours.errors import WtoursError


@dataclass(frozen=True)
class ClipConfig:
    frames: int = 8  # T
    stride: float = 1.0  # seconds between consecutive frames of a clip (the authors' 60 frames at 60 fps)
    clips_per_shard: int | None = None  # a random subset of starts per shard and epoch; None: every start
    seed: int = 0

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise WtoursError("--clip-frames must be at least 1", "DoRA uses 8")
        if self.stride <= 0:
            raise WtoursError("--clip-stride must be positive", "DoRA uses 1.0 s")
        if self.clips_per_shard is not None and self.clips_per_shard < 1:
            raise WtoursError("--clips-per-shard must be at least 1", "or leave it out for every clip")


def cell_step(stride: float, fps: float) -> int:
    """Grid cells between consecutive clip frames; the stride must be a whole number of cells."""
    step = stride * fps
    if step < 1 - 1e-6 or abs(step - round(step)) > 1e-6:
        raise WtoursError(f"clip stride {stride} s is not a whole number of frames at the shards' {fps} fps",
                          f"use a multiple of {1 / fps:g} s, or reshard with another --fps")
    return round(step)


def clip_starts(shard: ShardRef, config: ClipConfig) -> list[int]:
    """Every start cell whose clip lies inside one run of the shard."""
    span = (config.frames - 1) * cell_step(config.stride, shard.fps)
    return [c for first, last in shard.cell_runs for c in range(first, last - span + 1)]


def epoch_starts(shard: ShardRef, config: ClipConfig, epoch: int) -> list[int]:
    """The starts used in one epoch: all of them, or a seeded subset of `clips_per_shard`."""
    starts = clip_starts(shard, config)
    if config.clips_per_shard is None or config.clips_per_shard >= len(starts):
        return starts
    rng = random.Random(f"{config.seed}:{epoch}:{shard.url}")
    return sorted(rng.sample(starts, config.clips_per_shard))


def clips_per_epoch(shards: list[ShardRef], config: ClipConfig) -> int:
    """Exact: the subset size does not depend on the epoch."""
    total = 0
    for shard in shards:
        n = len(clip_starts(shard, config))
        total += n if config.clips_per_shard is None else min(n, config.clips_per_shard)
    return total


@dataclass(frozen=True)
class EpochPlan:
    slots: list[list[int]]  # per (rank, worker) slot: shard positions, in reading order
    slot_clips: list[int]  # clips each slot's shards hold
    quota: int  # clips every slot yields (its own, then repeats of them to fill up)
    total_clips: int  # the epoch's distinct clips

    @property
    def repeated_clips(self) -> int:
        return self.quota * len(self.slots) - self.total_clips

    def shards_of(self, slot: int) -> list[int]:
        """A slot's shards; a slot left without any (fewer shards than slots) borrows another's."""
        if self.slots[slot]:
            return self.slots[slot]
        filled = [s for s in self.slots if s]
        return filled[slot % len(filled)]


def plan_epoch(shards: list[ShardRef], config: ClipConfig, epoch: int, num_slots: int, batch_size: int = 1) -> EpochPlan:
    """Shuffle the shards for this epoch, balance them over the slots, and set an equal quota.

    Slots are `rank * workers + worker`. Every slot yields the same number of clips, a whole number
    of batches, so all ranks run the same number of steps (DDP needs that); a slot short of its quota
    repeats its own clips, and together the slots cover every clip of the epoch."""
    rng = random.Random(f"{config.seed}:{epoch}:shards")
    order = list(range(len(shards)))
    rng.shuffle(order)
    counts = {i: len(epoch_starts(shards[i], config, epoch)) for i in order}
    slots: list[list[int]] = [[] for _ in range(num_slots)]
    totals = [0] * num_slots
    for i in sorted(order, key=lambda i: -counts[i]):  # largest first onto the lightest slot (stable)
        target = min(range(num_slots), key=lambda s: (totals[s], s))
        slots[target].append(i)
        totals[target] += counts[i]
    for slot in slots:
        rng.shuffle(slot)
    total = sum(counts.values())
    if total == 0:
        raise WtoursError(f"no clip of {config.frames} frames {config.stride} s apart fits in these shards",
                          "use fewer --clip-frames, a shorter --clip-stride, or shards with more samples per shard")
    quota = math.ceil(max(totals) / batch_size) * batch_size
    return EpochPlan(slots, totals, quota, total)
