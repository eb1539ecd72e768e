"""The authors' epoch (a clip start per source frame) two ways, side by side: `--epoch-length source-frames`
on 2 fps shards, and shards at the source rate (60 fps). Prints, for a 4K60 street clip (benchmarks.common):
sharding time and bytes of each set, the clips per epoch each gives (the grid's and the authors' count),
the samples an epoch reads, and the time to plan a Venice-sized epoch (every loader worker plans its own).

    python -m benchmarks.epoch_bench [--seconds 12] [--workers 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import header, street_4k60
from wtours.clips.epoch import ClipConfig, authors_clip_starts, authors_steps, plan_epoch, source_step
from wtours.clips.spec import ShardRef, resolve_sets
from wtours.fetch.local import add_local
from wtours.layout import Layout
from wtours.shard.index import ShardEntry
from wtours.shard.params import RunOptions, ShardParams
from wtours.shard.run import shard_video

CLIP = ClipConfig(frames=8, stride=1.0)  # the authors': 8 frames, 60 source frames (1 s) apart
VENICE_SECONDS, SOURCE_FPS = 6600, 60  # the Venice upload: about 1 h 50 min at 60 fps (walking-tours facts)
RANKS, WORKERS, BATCH = 8, 10, 6  # the authors' run: 8 GPUs x 6 clips, --num_workers 10


def shard_set(video: Path, root: Path, fps: float, workers: int) -> tuple[float, int]:
    """Seconds to shard `video` at `fps` (defaults otherwise) and the set's bytes on disk."""
    layout = Layout(root)
    add_local(video, "street", layout.root, mode="symlink", say=lambda m: None)
    start = time.perf_counter()
    shard_video(layout, "street", ShardParams(fps=fps), RunOptions(workers=workers, progress=False),
                say=lambda m: None)
    seconds = time.perf_counter() - start
    return seconds, sum(f.stat().st_size for f in layout.shard_dir("street").glob("*.tar"))


def samples_read(plan) -> int:
    """Samples all slots read in one epoch (each read part from its first needed sample to its last)."""
    return sum((r.stop_sample or r.ref.entry.samples) - r.first_sample
               for slot in range(len(plan.slots)) for r in plan.reads(slot))


def venice_grid(fps: float, samples_per_shard: int = 1000) -> list[ShardRef]:
    """Shards as a Venice index at `fps` would list them (no files: planning only reads the index)."""
    cells, refs = int(VENICE_SECONDS * fps), []
    for first in range(0, cells, samples_per_shard):
        last = min(first + samples_per_shard, cells) - 1
        name = f"venice-{first // samples_per_shard:06d}.tar"
        entry = ShardEntry(name, last - first + 1, 0, 0, first / fps, last / fps, ((first, last),), 0, "0" * 64)
        refs.append(ShardRef(name, "venice", fps, entry))
    return refs


def timed_plan(shards: list[ShardRef], config: ClipConfig) -> tuple[float, object]:
    start = time.perf_counter()
    plan = plan_epoch(shards, config, 0, RANKS, WORKERS, BATCH)
    return time.perf_counter() - start, plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=12, help="length of the 4K60 street clip")
    parser.add_argument("--workers", type=int, default=1, help="shard workers")
    args = parser.parse_args()
    video = street_4k60(args.seconds)
    print(header("epoch_bench") + f" | {video.name}, {args.seconds} s, shard workers {args.workers}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fps in (2.0, 60.0):
            seconds, size = shard_set(video, Path(tmp) / f"fps{fps:g}", fps, args.workers)
            (found,) = resolve_sets("street", Path(tmp) / f"fps{fps:g}")
            grid = plan_epoch(list(found.refs), CLIP, 0, 1, 1, 1).total_clips
            authors = authors_clip_starts(found.index.source_frames, CLIP.frames,
                                          source_step(CLIP.stride, found.index.video.fps))
            rows[fps] = (seconds, size, found.index.samples, grid, authors)
            print(f"shards at {fps:g} fps: {seconds:.1f} s to shard, {size / 1e6:.1f} MB "
                  f"({size / 1e9 * 3600 / args.seconds:.2f} GB per hour of video), {found.index.samples} samples; "
                  f"grid clips per epoch {grid}, the authors' count {authors} "
                  f"({found.index.source_frames} source frames)")
    (s2, b2, *_), (s60, b60, *_) = rows[2.0], rows[60.0]
    print(f"60 fps / 2 fps: {s60 / s2:.2f}x the sharding time, {b60 / b2:.2f}x the bytes")

    authors = authors_clip_starts(VENICE_SECONDS * SOURCE_FPS, CLIP.frames, source_step(CLIP.stride, SOURCE_FPS))
    steps = authors_steps(authors, RANKS, BATCH)
    print(f"Venice ({VENICE_SECONDS} s at {SOURCE_FPS} fps), {RANKS} ranks x {WORKERS} workers x B={BATCH}: the "
          f"authors' {authors} clips, {steps} steps per epoch, {100 * steps} in 100 epochs")
    for label, shards, config in (
            ("2 fps grid, one pass", venice_grid(2.0), CLIP),
            ("2 fps grid, --epoch-length source-frames", venice_grid(2.0), ClipConfig(8, 1.0, epoch_clips=authors)),
            ("60 fps grid, one pass", venice_grid(60.0), CLIP)):
        seconds, plan = timed_plan(shards, config)
        print(f"  {label}: {plan.total_clips} clips, {plan.steps} steps per epoch, {samples_read(plan)} samples "
              f"read per epoch; planning {seconds * 1000:.0f} ms (per worker and epoch)")


if __name__ == "__main__":
    main()
