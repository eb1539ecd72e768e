"""Clips per second of the DoRA data path from shards, per CPU core and with all cores.

Input: shards made with the default settings (2 fps, short side 512, quality 90) from a 4K60 street
clip (the 12 s clip of shard_bench looped to 2 min by stream copy). Measures
- the CPU path (DataLoader workers) with 1 worker and with workers = cores;
- decode + multi-crop per clip in one process, side by side (interleaved): wtours' CPU kernels
  against the authors' PIL operations (tests/reference_multicrop.py) on the same JPEGs;
- the GPU path: its workers' side (reading tars into clips of JPEGs) always, and decode + multi-crop
  on the device when CUDA is present;
- an authors-style baseline: per clip, reopen the 4K video, decode 8 full-size frames 60 source
  frames apart, and apply the PIL augmentation;
- with `--baseline REV`, instead of the rows above: the CPU data path of git revision REV (its whole
  `wtours/`, exported to a temporary folder) against the working tree's, each measured in a process
  of its own, in rounds whose order alternates (`--repeats` rounds; medians, and the median of the
  per-round ratios): the 1-worker CPU path (wall clock, and the worker's CPU time per clip from
  /proc: the steadier per-core figure on a shared machine) and the loader in one process (CPU time
  per clip). REV needs the loader's API of 2026-12 (ClipDataset, LoaderConfig, make_loader);
- the cost of partial shard reads (the epoch plan hands each slot parts of shards): time and bytes to
  reach the middle sample of a 1000-sample shard by seek / http Range request against reading from
  the start and skipping (over http also a quarter of the shard and the whole of it: every sample checked
  against the index), and the plan's clips read / distinct clips for 8 x 10 and 64 x 8 slots on a
  corpus-shaped set (`--reading-only` runs just this part).

    python -m benchmarks.loader_bench [--batches 12] [--batch-size 8] [--reading-only]
    python -m benchmarks.loader_bench --baseline HEAD [--repeats 5]
    python -m benchmarks.loader_bench --jpeg-check [--repeats 5]   # the JPEG check against decoding
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import DATA, REPO, STREET, cached_video, header, street_4k60
from tests.reference_multicrop import multicrop_pil

# The wtours names each function uses are imported in it: a --probe of an older revision imports only
# the loader's API.


def bench_shards(loops: int = 10):
    """(the Layout of the bench's shards, the looped video), made on first use."""
    from wtours.fetch.local import add_local
    from wtours.layout import Layout
    from wtours.shard.params import RunOptions, ShardParams
    from wtours.shard.run import shard_video

    root = Layout(DATA / "loader-root")
    looped = cached_video(f"street4k60-{12 * loops}s.mp4",
                          ["-stream_loop", str(loops - 1), "-i", str(street_4k60(12)), "-c", "copy"])
    if not root.index_path("street").is_file():
        add_local(looped, "street", root.root, mode="symlink", say=lambda m: None)
        shard_video(root, "street", ShardParams(), RunOptions(workers=os.cpu_count() or 1), say=print)
    return root, looped


def loader_rate(shards, config, batches: int, consume=lambda batch: None) -> float:
    """Clips per second after the first batch (which pays for worker start-up), over epochs as needed."""
    return timed_loader(shards, config, batches, consume).rate


@dataclass
class LoaderTiming:
    """A loader's figures after the first batch of each epoch (which pays for worker start-up)."""

    rate: float  # clips per second, wall clock
    cpu: float  # the workers' CPU (user + system) ms per clip
    system: float  # of which in the kernel (page faults of fresh shared memory show here)
    faults: float  # the workers' minor page faults per clip


def timed_loader(shards, config, batches: int, consume=lambda batch: None) -> LoaderTiming:
    """`batches` batches of the CPU or GPU path's loader, over epochs as needed."""
    from wtours.clips.pipeline import ClipDataset, make_loader

    dataset = ClipDataset(shards, config)
    count, epoch, wall, used = 0, 0, 0.0, np.zeros(3)
    while count < batches:
        dataset.set_epoch(epoch)
        start, first, last = None, {}, {}
        for batch in make_loader(dataset):
            consume(batch)
            if start is None:
                start, first = time.perf_counter(), worker_usage(child_pids())
                continue
            last = worker_usage(first)  # read while the workers live: they exit when the loader is left
            count += 1
            if count == batches:
                break
        if start is not None:
            wall += time.perf_counter() - start
            used += sum(last[pid] - first[pid] for pid in last)
        epoch += 1
    clips = batches * config.batch_size
    user, system, faults = used / clips
    return LoaderTiming(clips / wall, (user + system) * 1000, system * 1000, faults)


def child_pids() -> list[int]:
    """This process's live child processes: the DataLoader's workers."""
    me, pids = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _stat(int(entry.name)) and int(_stat(int(entry.name))[1]) == me:
            pids.append(int(entry.name))
    return pids


def worker_usage(pids) -> dict[int, np.ndarray]:
    """[user seconds, system seconds, minor page faults] of each live process of `pids`."""
    tick, usage = os.sysconf("SC_CLK_TCK"), {}
    for pid in pids:
        fields = _stat(pid)
        if fields:  # [7]: minflt; [11] / [12]: utime / stime in clock ticks
            usage[pid] = np.array([int(fields[11]) / tick, int(fields[12]) / tick, int(fields[7])])
    return usage


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name ([0] the state, [1] the parent), [] once it exited."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def cpu_rate(shards, workers: int, batches: int, batch_size: int) -> float:
    from wtours.clips.pipeline import LoaderConfig

    return loader_rate(shards, LoaderConfig(batch_size=batch_size, workers=workers, shuffle_buffer=16), batches)


def gpu_rate(shards, batches: int, batch_size: int) -> float:
    from wtours.clips.pipeline import GpuAugmenter, LoaderConfig

    config = LoaderConfig(batch_size=batch_size, workers=os.cpu_count() or 1, augment="gpu", shuffle_buffer=16)
    augment = GpuAugmenter(config.multicrop, "cuda")

    def consume(raw) -> None:
        augment(raw)
        torch.cuda.synchronize()

    return loader_rate(shards, config, batches, consume)


def clip_jpgs(shards, clips: int) -> list[list[bytes]]:
    """The first `clips` x 8 JPEGs of the first shard, as clips of 8 frames."""
    from wtours.clips.stages import Problems, open_shards, tar_samples

    jpgs = [s.jpg for _, s in zip(range(clips * 8), tar_samples(open_shards(shards[:1], Problems()), Problems()))]
    return [jpgs[i * 8:(i + 1) * 8] for i in range(clips)]


def augment_costs(shards, clips: int, repeats: int) -> tuple[float, float]:
    """ms per clip for decode + multi-crop: wtours' CPU path (`multicrop_jpegs`) vs the authors' PIL
    operations, interleaved."""
    import io

    from PIL import Image

    from wtours.clips.augment import MultiCropConfig
    from wtours.clips.augment_cpu import multicrop_jpegs

    batch = clip_jpgs(shards, clips)
    config, rng = MultiCropConfig(), np.random.default_rng(0)

    def pil() -> None:
        for clip in batch:
            multicrop_pil([Image.open(io.BytesIO(j)).convert("RGB") for j in clip], rng, config)

    times: dict[str, list[float]] = {"wtours": [], "pil": []}
    for _ in range(repeats):
        for name, run in (("wtours", lambda: multicrop_jpegs(batch, rng, config)),
                          ("pil", pil)):
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1000 / clips)
    return float(np.median(times["wtours"])), float(np.median(times["pil"]))


def street_jpegs(frames: int) -> list[bytes]:
    """`frames` frames of the street footage at the shard defaults' size and quality (910x512, q90), with the
    4K clip's temporal noise, encoded by the shard writer (without the minutes the 4K clip takes to make)."""
    from wtours.media import ffmpeg_exe
    from wtours.shard.writer import encode_jpeg

    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(STREET), "-vf", "scale=910:512:flags=bicubic,"
                          "noise=alls=6:allf=t", "-frames:v", str(frames), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return [encode_jpeg(frame, 90) for frame in np.frombuffer(raw, np.uint8).reshape(frames, 512, 910, 3)]


def jpeg_check_costs(frames: int = 64, repeats: int = 5) -> None:
    """Per frame, interleaved (median of `repeats` rounds): the structural check every sample passes
    before decoding (`clips/jpeg_check.py`) against decoding it whole (OpenCV) and decoding a 60 % x 60 %
    window of it (TurboJPEG 3, where present)."""
    from wtours.clips.jpeg import decode_frame, window_decoder
    from wtours.clips.jpeg_check import jpeg_damage

    jpgs = street_jpegs(frames)
    height, width = decode_frame(jpgs[0]).shape[:2]
    box = (width // 5, height // 5, width * 4 // 5, height * 4 // 5)
    window = np.empty((box[3] - box[1], box[2] - box[0], 3), np.uint8)
    decoder = window_decoder()
    runs = {"check": jpeg_damage, "opencv whole": decode_frame}
    if decoder is not None:
        runs["turbojpeg window"] = lambda jpg: decoder.decode_window(jpg, box, window)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            for jpg in jpgs:
                run(jpg)
            times[name].append((time.perf_counter() - start) * 1e6 / len(jpgs))
    median = {name: float(np.median(t)) for name, t in times.items()}
    print(f"per {width}x{height} frame ({np.mean([len(j) for j in jpgs]) / 1000:.0f} kB, {len(jpgs)} frames): "
          + ", ".join(f"{name} {us:.0f} us" for name, us in median.items())
          + "; check / decode: " + ", ".join(f"{median['check'] / us:.1%} of {name}" for name, us in median.items()
                                             if name != "check"))


def probe_figures(root: Path, batches: int, batch_size: int) -> dict:
    """One contender's figures (`--probe`, in a process of its own): the 1-worker CPU path (wall clock,
    and the worker's CPU per clip) and the loader in this process (CPU per clip). Uses only the loader's
    API (ClipDataset, LoaderConfig, make_loader, spec.resolve), so any revision that has it can run."""
    from wtours.clips.pipeline import ClipDataset, LoaderConfig
    from wtours.clips.spec import resolve

    shards = resolve("street", root)
    config = LoaderConfig(batch_size=batch_size, workers=1, shuffle_buffer=16)
    timing = timed_loader(shards, config, batches)
    dataset = ClipDataset(shards, LoaderConfig(batch_size=batch_size, workers=0, shuffle_buffer=16))
    batches_in_process = iter(dataset)
    next(batches_in_process)  # the first pays for opening the shard
    start, clips = time.process_time(), 0
    for batch in itertools.islice(batches_in_process, batches):
        clips += len(batch.keys)
    return {"rate": timing.rate, "worker": timing.cpu, "system": timing.system, "faults": timing.faults,
            "cpu": (time.process_time() - start) * 1000 / clips}


def export_tree(rev: str, folder: Path) -> Path:
    """`wtours/` as of git revision `rev`, written under `folder` (a probe's working folder: imported first)."""
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev, "wtours"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def compare_with_baseline(root: Path, rev: str, repeats: int, batches: int, batch_size: int) -> None:
    """The working tree's data path against `rev`'s, each round running one `--probe` process per tree
    (the order rotates between rounds): whole loaders, workers and output memory included."""
    names = [rev, "working tree"]
    rows: dict[str, dict[str, list[float]]] = {
        name: {"cpu": [], "rate": [], "worker": [], "system": [], "faults": []} for name in names}
    with tempfile.TemporaryDirectory(prefix="loader-bench-") as folder:
        trees = {rev: str(export_tree(rev, Path(folder))), "working tree": ""}
        for r in range(repeats):
            for name in names[r % 2:] + names[:r % 2]:
                # `python -m` puts the working folder first on sys.path: a revision's folder holds its wtours/,
                # PYTHONPATH the repository's benchmarks/ and tests/
                paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
                env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
                done = subprocess.run([sys.executable, "-m", __spec__.name, "--probe", "--batches", str(batches),
                                       "--batch-size", str(batch_size)], env=env, cwd=trees[name] or REPO,
                                      capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"the probe of {name} failed:\n{done.stderr[-2000:]}")
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                for key in rows[name]:
                    rows[name][key].append(figures[key])
            print(f"  round {r + 1}: " + "; ".join(
                f"{name}: 1 worker {rows[name]['rate'][-1]:.2f} clips/s, worker CPU {rows[name]['worker'][-1]:.1f} "
                f"ms (kernel {rows[name]['system'][-1]:.1f} ms, {rows[name]['faults'][-1]:.0f} faults), one process "
                f"{rows[name]['cpu'][-1]:.1f} ms" for name in names), flush=True)
    for key, label in (("worker", "1 worker, the worker's CPU ms per clip"),
                       ("system", "1 worker, of which in the kernel, ms per clip"),
                       ("faults", "1 worker, the worker's minor page faults per clip"),
                       ("rate", "1 worker, clips/s (wall clock)"),
                       ("cpu", "the loader in one process, CPU ms per clip")):
        print(f"{label}:")
        old = np.array(rows[rev][key])
        for name in names:
            new = np.array(rows[name][key])
            ratios = old / new if key != "rate" else new / old
            gain = f"{rev} / this" if key != "rate" else f"this / {rev}"
            print(f"  {name:14s} {np.median(new):7.2f}  {gain}: median {np.median(ratios):.3f}x "
                  f"(rounds {ratios.min():.3f}-{ratios.max():.3f})")
    print("clips/s per core from the worker's CPU time (median): " + ", ".join(
        f"{name} {1000 / np.median(rows[name]['worker']):.2f}" for name in names))


def authors_style_rate(video: Path, clips: int) -> float:
    """Reopen the 4K video per clip, decode 8 full-resolution frames 60 apart, augment."""
    from PIL import Image

    from wtours.clips.augment import MultiCropConfig
    from wtours.media import ffmpeg_exe, probe

    info = probe(video)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(clips):
        t0 = rng.uniform(0, info.duration - 8.5)
        raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-threads", "1", "-ss", f"{t0:.3f}", "-i", str(video),
                              "-vf", "select='not(mod(n\\,60))'", "-fps_mode", "passthrough", "-frames:v", "8",
                              "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
        frame = info.width * info.height * 3
        images = [Image.frombuffer("RGB", (info.width, info.height), raw[i * frame:(i + 1) * frame])
                  for i in range(len(raw) // frame)]
        multicrop_pil(images, rng, MultiCropConfig())
    return clips / (time.perf_counter() - start)


def reading_shard():
    """One full 1000-sample shard at the default settings (2 fps, short side 512, quality 90) from the
    street footage (20 s) looped to 520 s (stream copy): the size of a corpus shard."""
    from wtours.clips.spec import ShardRef, resolve
    from wtours.fetch.local import add_local
    from wtours.layout import Layout
    from wtours.shard.params import RunOptions, ShardParams
    from wtours.shard.run import shard_video

    root = Layout(DATA / "reading-root")
    if not root.index_path("street").is_file():
        looped = cached_video("street-loop26.avi", ["-stream_loop", "25", "-i", str(STREET), "-c", "copy"])
        add_local(looped, "street", root.root, mode="symlink", say=lambda m: None)
        shard_video(root, "street", ShardParams(), RunOptions(workers=1, progress=False), say=lambda m: None)
    ref: ShardRef = max(resolve("street", root.root), key=lambda r: r.entry.samples)
    if ref.entry.offsets is None:  # an index written before version 2: take the offsets from the tar itself
        import dataclasses
        import tarfile

        offsets: dict[str, int] = {}
        with tarfile.open(ref.url) as tar:
            for member in tar:
                offsets.setdefault(member.name.split(".")[0], member.offset)
        ref = dataclasses.replace(ref, entry=dataclasses.replace(ref.entry, offsets=tuple(offsets.values())))
    return root, ref


def time_part(read, repeats: int = 5) -> tuple[float, int]:
    """Median ms to open a shard part and get its samples, and the bytes read from the stream."""
    from wtours.clips.stages import Problems, open_part, tar_samples

    times, size = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        source = open_part(read)
        raw = source.stream
        counted = _CountingStream(raw)
        source.stream = counted
        samples = list(tar_samples([source], Problems()))
        raw.close()
        times.append((time.perf_counter() - start) * 1000)
        size = counted.bytes
        assert samples, "no sample read"
    return float(np.median(times)), size


class _CountingStream:
    def __init__(self, raw):
        self.raw, self.bytes = raw, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.bytes += len(data)
        return data


def reading_costs() -> None:
    import dataclasses

    from tests.http_server import FileServer
    from wtours.clips.epoch import ClipConfig, ShardRead, plan_epoch
    from wtours.clips.spec import ShardRef
    from wtours.shard.index import ShardEntry

    root, ref = reading_shard()
    mid = ref.entry.samples // 2
    print(f"partial reads: {ref.entry.name}, {ref.entry.samples} samples, {Path(ref.url).stat().st_size / 1e6:.0f} MB; "
          f"reaching sample {mid} (one sample):")
    plain = dataclasses.replace(ref, entry=dataclasses.replace(ref.entry, offsets=None))
    rows = [("local seek", ShardRead(ref, frozenset(), mid, mid + 1)),
            ("local from start + skip", ShardRead(plain, frozenset(), mid, mid + 1))]
    for name, read in rows:
        ms, size = time_part(read)
        print(f"  {name:28s} {ms:8.1f} ms  {size / 1e6:7.2f} MB read")
    quarter = ref.entry.samples // 4  # a 64 x 8 slot's typical part: about a quarter of a shard, from its middle
    with FileServer(Path(ref.url).parent) as server:
        remote = dataclasses.replace(ref, url=server.url(ref.entry.name))
        for name, read in (("http Range request", ShardRead(remote, frozenset(), mid, mid + 1)),
                           ("http from start + skip", ShardRead(dataclasses.replace(remote, entry=plain.entry),
                                                                frozenset(), mid, mid + 1)),
                           ("http a quarter (Range)", ShardRead(remote, frozenset(), mid, mid + quarter)),
                           ("http the whole shard", ShardRead(remote, frozenset()))):
            ms, size = time_part(read)
            print(f"  {name:28s} {ms:8.1f} ms  {size / 1e6:7.2f} MB read")
    ms, size = time_part(ShardRead(ref, frozenset(), mid, mid + quarter), repeats=3)
    whole_ms, whole = time_part(ShardRead(ref, frozenset()), repeats=3)
    print(f"  a quarter of the shard (seek):  {ms:8.1f} ms  {size / 1e6:7.2f} MB; the whole shard: {whole_ms:.1f} ms "
          f"{whole / 1e6:.2f} MB")
    # the plan on a corpus-shaped set: 118 shards of up to 1000 samples at 2 fps, indexes only
    shards = []
    for v, count in enumerate([41, 17, 33, 27]):
        for n in range(count):
            last = 999 if n < count - 1 else 136 + 97 * v
            runs = ((n * 1000, n * 1000 + last),)
            entry = ShardEntry(f"w{v}-{n}", last + 1, 0, last, n * 500.0, (n * 1000 + last) / 2, runs, 0, "0" * 64)
            shards.append(ShardRef(f"w{v}-{n}", f"w{v}", 2.0, entry))
    for ranks, workers in ((8, 10), (64, 8)):
        start = time.perf_counter()
        plan = plan_epoch(shards, ClipConfig(frames=8, stride=1.0), 0, ranks, workers, 32)
        planned = (time.perf_counter() - start) * 1000
        touched = [len({r.ref.url for r in plan.reads(s)}) for s in range(len(plan.slots))]
        print(f"plan, {len(shards)} shards, {ranks} x {workers} slots, B=32: {plan.total_clips} clips, "
              f"{plan.clips_read} read ({plan.clips_read / plan.total_clips:.4f}x, "
              f"+{plan.clips_read - plan.total_clips} <= ranks x B = {ranks * 32}), {plan.steps} steps per rank, "
              f"shards per slot {min(touched)}-{max(touched)}, planned in {planned:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--authors-clips", type=int, default=3)
    parser.add_argument("--reading-only", action="store_true", help="only the partial-read costs and plan ratios")
    parser.add_argument("--baseline", metavar="REV",
                        help="compare the CPU data path (wtours/ as a whole) with this git revision's, only")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds for --baseline")
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)  # one --baseline contender
    parser.add_argument("--jpeg-check", action="store_true", help="only the JPEG check's cost against decoding")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.probe:
        print(json.dumps(probe_figures(DATA / "loader-root", args.batches, args.batch_size)))
        return
    if args.jpeg_check:
        print(header("loader_bench (the JPEG check)"))
        jpeg_check_costs(repeats=args.repeats)
        return
    if args.reading_only:
        print(header("loader_bench (reading)"))
        reading_costs()
        return
    from wtours.clips.pipeline import LoaderConfig
    from wtours.clips.spec import resolve

    root, video = bench_shards()
    shards = resolve("street", root.root)
    cores = os.cpu_count() or 1
    print(header("loader_bench" + (f" (--baseline {args.baseline})" if args.baseline else "")))
    if args.baseline:
        compare_with_baseline(root.root, args.baseline, args.repeats, args.batches, args.batch_size)
        return
    from wtours.shard.index import load_index

    index = load_index(root, "street")
    print(f"shards: {len(index.shards)} x {index.shards[0].samples} frames {index.shards[0].name}, {index.params}")
    one = timed_loader(shards, LoaderConfig(batch_size=args.batch_size, workers=1, shuffle_buffer=16), args.batches)
    print(f"cpu path, 1 worker:      {one.rate:6.2f} clips/s  (per core; the worker's CPU: {one.cpu:.1f} ms per clip, "
          f"{1000 / one.cpu:.2f} clips/s; {one.system:.1f} ms of it in the kernel, {one.faults:.0f} page faults)")
    many = cpu_rate(shards, cores, args.batches, args.batch_size)
    print(f"cpu path, {cores} workers:     {many:6.2f} clips/s")
    fast, pil = augment_costs(shards, clips=8, repeats=5)
    print(f"decode + multi-crop per clip, one process: wtours {fast:.1f} ms, authors' PIL ops {pil:.1f} ms "
          f"(ratio {pil / fast:.2f})")
    raw = loader_rate(shards, LoaderConfig(batch_size=args.batch_size, workers=1, augment="gpu", shuffle_buffer=16),
                      args.batches * 4)
    print(f"gpu path, worker side (tar -> clips of JPEGs), 1 worker: {raw:6.1f} clips/s")
    if torch.cuda.is_available():
        print(f"gpu path, {cores} workers:     {gpu_rate(shards, args.batches, args.batch_size):6.2f} clips/s "
              f"({torch.cuda.get_device_name()})")
    else:
        print("gpu path (device side): no CUDA here")
    authors = authors_style_rate(video, args.authors_clips)
    print(f"authors-style (4K decode per clip, 1 thread): {authors:6.3f} clips/s")
    print(f"ratio cpu 1 worker / authors-style: {one.rate / authors:.0f}x")
    reading_costs()


if __name__ == "__main__":
    main()
