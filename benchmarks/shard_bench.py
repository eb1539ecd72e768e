"""wtours shard vs the bare ffmpeg decode floor on a 4K60 street clip, side by side.

Prints source frames decoded per second for `ffmpeg -i X -vf fps=F,scale=... -f null -` (one process,
all cores) and for `wtours shard`: one worker on one segment (the whole pipeline's own overhead), and
workers = cores on one segment per core. Cutting a short clip into segments costs each later segment
a seek to the keyframe before its start (up to one GOP, 2 s here) that a 500 s segment of a real
video does not notice; the w1 x cores-segments row shows that cost alone.

    python -m benchmarks.shard_bench [--seconds 12] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import header, street_4k60
from wtours.fetch.local import add_local
from wtours.layout import Layout
from wtours.media import ffmpeg_exe, probe
from wtours.shard.params import RunOptions, ShardParams
from wtours.shard.plan import output_size
from wtours.shard.run import shard_video


def floor_seconds(video: Path, fps: float, size: tuple[int, int]) -> float:
    start = time.perf_counter()
    subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(video), "-vf",
                    f"fps={fps},scale={size[0]}:{size[1]}", "-f", "null", "-"], check=True)
    return time.perf_counter() - start


def shard_seconds(video: Path, params: ShardParams, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        layout = Layout(tmp)
        add_local(video, "bench", layout.root, mode="symlink", say=lambda m: None)
        start = time.perf_counter()
        shard_video(layout, "bench", params, RunOptions(workers=workers, progress=False), say=lambda m: None)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    video = street_4k60(args.seconds)
    info = probe(video)
    cores = os.cpu_count() or 1
    fps, short_side = 2.0, 512
    cells = int(info.duration * fps)
    # One segment per core, as a long video gives every worker many segments.
    params = ShardParams(fps=fps, short_side=short_side, samples_per_shard=max(1, -(-cells // cores)))
    size = output_size(info.width, info.height, short_side)
    print(header("shard_bench"))
    print(f"clip: {video.name} {info.width}x{info.height} {info.fps:.0f} fps, {info.frames} frames, "
          f"{video.stat().st_size / 1e6:.1f} MB; sampling {fps} fps -> {size[0]}x{size[1]}, "
          f"{params.samples_per_shard} samples per shard")
    one_segment = ShardParams(fps=fps, short_side=short_side, samples_per_shard=cells)
    split = f"shard_w{cores}"
    runs: dict[str, list[float]] = {"floor": [], "shard_w1_1seg": [], f"shard_w1_{cores}seg": [], split: []}
    for _ in range(args.repeats):  # interleaved, so load on the shared machine hits all alike
        runs["floor"].append(floor_seconds(video, fps, size))
        runs["shard_w1_1seg"].append(shard_seconds(video, one_segment, 1))
        runs[f"shard_w1_{cores}seg"].append(shard_seconds(video, params, 1))
        runs[split].append(shard_seconds(video, params, cores))
    rates = {name: info.frames / statistics.median(times) for name, times in runs.items()}
    for name, rate in rates.items():
        print(f"{name:>14}: {rate:7.1f} source frames/s  (runs: {', '.join(f'{t:.2f}s' for t in runs[name])})")
    print(f"ratio {split} / floor: {rates[split] / rates['floor']:.2f}   (target >= 0.8)")
    print(f"ratio shard_w1_1seg / floor: {rates['shard_w1_1seg'] / rates['floor']:.2f}")


if __name__ == "__main__":
    main()
