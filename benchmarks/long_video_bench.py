"""Memory and time of a long video through add -> shard -> stats -> inspect -> one loader epoch.

Two videos of a moving test pattern (lavfi testsrc2, low resolution so a 2-hour one runs on a small
machine; 30 fps, x264 ultrafast, made once under bench-data/long/), each through the stages as the
user runs them: `wtours add`, `wtours shard`, `wtours stats --no-classes`, `wtours inspect` as CLI
subprocesses, and one epoch of the clip loader (CPU path, DataLoader workers; `wtours` has no
command for that, so this script runs it in a subprocess of its own: `long_video_bench.py epoch`).
Per stage: wall time, the peak RSS of the largest process of the stage's tree (its rusage, exact),
and the peak of the tree's summed RSS (sampled every 50 ms; it counts pages shared between processes
once per process). The claim under test: peak memory flat in video length (long / short <= 1.2),
time linear in frames (long / short time ~ the frame ratio).

The loader epoch takes `--clips-per-shard` clips from every shard (shards of `--samples-per-shard`
frames, so both videos have whole shards and the epoch's clips scale with the frames); a full epoch
of a 2-hour video (14,400 clips) would take the CPU path about 8 minutes per core.

    python -m benchmarks.long_video_bench [--short 10] [--long 120] [--size 192x108]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.common import DATA, header
from wtours.media import ffmpeg_exe

FPS = 30


def make_video(minutes: float, size: str) -> Path:
    """bench-data/long/pattern-<size>-<minutes>min.mp4, made once (temporary name, then rename)."""
    out = DATA / "long" / f"pattern-{size}-{minutes:g}min.mp4"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.mp4")
    subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-f", "lavfi",
                    "-i", f"testsrc2=size={size}:rate={FPS}", "-t", str(minutes * 60), "-c:v", "libx264",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(tmp)], check=True)
    tmp.rename(out)
    return out


def _tree_rss(root: int) -> int:
    """Summed RSS (bytes) of `root` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)  # fields[1]: ppid
        rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # fields[21]: rss in pages
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measure(args: list[str], log: Path) -> dict[str, float]:
    """Run one stage; wall seconds, the largest process's peak RSS (MB) and the tree's sampled peak (MB)."""
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(args)}\n".encode())
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], _tree_rss(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)  # usage: the stage's process and the children it reaped
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
    if proc.returncode:
        raise SystemExit(f"stage failed (exit {proc.returncode}): {' '.join(args)}; see {log}")
    return {"s": seconds, "rss": usage.ru_maxrss / 1024, "tree": peak[0] / 2**20}


def run_video(video: Path, minutes: float, args, work: Path, log: Path) -> dict[str, dict[str, float]]:
    root, slug = work / f"root-{minutes:g}", f"pattern-{round(minutes * 60)}s"  # names take [a-z0-9-]
    shutil.rmtree(root, ignore_errors=True)
    cli = [sys.executable, "-m", "wtours"]
    stages = {
        "add": [*cli, "add", str(video), "--name", slug, "--root", str(root), "--mode", "symlink", "-q"],
        "shard": [*cli, "shard", "--city", slug, "--root", str(root), "--short-side", str(args.short_side),
                  "--samples-per-shard", str(args.samples_per_shard), "--workers", str(args.workers), "-q"],
        "stats": [*cli, "stats", "--city", slug, "--root", str(root), "--no-classes", "--out", str(work / "stats"),
                  "--overwrite", "-q"],
        "inspect": [*cli, "inspect", slug, "--root", str(root), "--clips-per-shard", str(args.clips_per_shard)],
        "epoch": [sys.executable, "-m", __spec__.name, "epoch", "--root", str(root), "--slug", slug,
                  "--clips-per-shard", str(args.clips_per_shard), "--workers", str(args.loader_workers)],
    }
    return {name: measure(command, log) for name, command in stages.items()}


def epoch(argv: list[str]) -> None:
    """One epoch of the CPU loader path, as `wtours train` consumes it (batches normalised after the copy)."""
    import torch

    from wtours.clips.epoch import ClipConfig
    from wtours.clips.pipeline import ClipDataset, LoaderConfig, make_loader
    from wtours.clips.spec import resolve

    parser = argparse.ArgumentParser()
    parser.add_argument("--root")
    parser.add_argument("--slug")
    parser.add_argument("--clips-per-shard", type=int)
    parser.add_argument("--workers", type=int)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = LoaderConfig(batch_size=8, workers=args.workers,
                          clip=ClipConfig(frames=8, stride=1.0, clips_per_shard=args.clips_per_shard))
    dataset = ClipDataset(resolve(args.slug, args.root), config)
    dataset.set_epoch(0)
    clips = 0
    for batch in make_loader(dataset):
        clips += len(batch.normalised().keys)
    print(f"epoch: {clips} clips")


def main() -> None:
    if sys.argv[1:2] == ["epoch"]:
        return epoch(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", type=float, default=10.0, help="minutes of the short video")
    parser.add_argument("--long", type=float, default=120.0, help="minutes of the long video")
    parser.add_argument("--check", type=float, help="minutes of a third video: measured against the straight line "
                        "through the other two (time linear in frames)")
    parser.add_argument("--size", default="192x108")
    parser.add_argument("--short-side", type=int, default=108, help="wtours shard --short-side (108: no upscaling)")
    parser.add_argument("--samples-per-shard", type=int, default=240, help="2 minutes at 2 fps: whole shards")
    parser.add_argument("--clips-per-shard", type=int, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="wtours shard --workers")
    parser.add_argument("--loader-workers", type=int, default=2)
    args = parser.parse_args()
    print(header("long_video_bench"))
    work = DATA / "long" / "work"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "stages.log"
    log.write_text("")
    results = {}
    for minutes in (args.short, args.long) + ((args.check,) if args.check else ()):
        video = make_video(minutes, args.size)
        results[minutes] = run_video(video, minutes, args, work, log)
        print(f"{minutes:g} min ({minutes * 60 * FPS:.0f} frames of {args.size} at {FPS} fps): "
              + ", ".join(f"{k} {v['s']:.1f} s / {v['rss']:.0f} MB" for k, v in results[minutes].items()), flush=True)
    short, long_ = results[args.short], results[args.long]
    ratio = args.long / args.short
    print(f"\nframe ratio long / short: {ratio:g} (stage output under {work}, log {log})")
    print(f"| stage | {args.short:g} min: s | MB largest process | MB tree | {args.long:g} min: s | MB largest process "
          f"| MB tree | time ratio (frames {ratio:g}x) | RSS ratio largest / tree |")
    print("|---|---|---|---|---|---|---|---|---|")
    for stage in short:
        a, b = short[stage], long_[stage]
        print(f"| {stage} | {a['s']:.1f} | {a['rss']:.0f} | {a['tree']:.0f} | {b['s']:.1f} | {b['rss']:.0f} | "
              f"{b['tree']:.0f} | {b['s'] / a['s']:.2f} | {b['rss'] / a['rss']:.2f} / {b['tree'] / a['tree']:.2f} |")
    # time = fixed + per-frame x frames through the two points; a third length checks the line
    frames = {m: m * 60 * FPS for m in results}
    print("\n| stage | fixed s (start-up) | s per 10,000 source frames |"
          + (f" {args.check:g} min: predicted s | measured s | MB largest process |" if args.check else ""))
    print("|---|---|---|" + ("---|---|---|" if args.check else ""))
    for stage in short:
        slope = (long_[stage]["s"] - short[stage]["s"]) / (frames[args.long] - frames[args.short])
        fixed = short[stage]["s"] - slope * frames[args.short]
        line = f"| {stage} | {fixed:.1f} | {slope * 1e4:.2f} |"
        if args.check:
            check = results[args.check][stage]
            line += f" {fixed + slope * frames[args.check]:.1f} | {check['s']:.1f} | {check['rss']:.0f} |"
        print(line)


if __name__ == "__main__":
    main()
