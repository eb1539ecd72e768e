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
- with `--baseline REV`, instead of the rows above: `wtours/clips/augment_cpu.py` as of git revision
  REV (the whole batch decoded, then cropped, as the loader did) against the working tree's, with
  the batch decoded first and with each clip decoded just before its crops (`multicrop_jpegs`),
  interleaved in rounds whose order rotates (`--repeats` rounds; medians, and the median of the
  per-round ratios): decode + multi-crop in one process (CPU time per clip), and the 1-worker CPU
  path (wall clock, and the worker's CPU time per clip from /proc: the steadier per-core figure on
  a shared machine);
- the cost of partial shard reads (the epoch plan hands each slot parts of shards): time and bytes to
  reach the middle sample of a 1000-sample shard by seek / http Range request against reading from
  the start and skipping, and the plan's clips read / distinct clips for 8 x 10 and 64 x 8 slots on a
  corpus-shaped set (`--reading-only` runs just this part).

    python benchmarks/loader_bench.py [--batches 12] [--batch-size 8] [--reading-only]
    python benchmarks/loader_bench.py --baseline HEAD [--repeats 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import DATA, STREET, cached_video, header, street_4k60  # noqa: E402

from tests.reference_multicrop import multicrop_pil  # noqa: E402
from wtours.clips.augment import MultiCropConfig  # noqa: E402
from wtours.clips.augment_cpu import multicrop_jpegs  # noqa: E402
from wtours.clips.pipeline import ClipDataset, GpuAugmenter, LoaderConfig, make_loader  # noqa: E402
from wtours.clips.spec import resolve  # noqa: E402
from wtours.download import add_local  # noqa: E402
from wtours.layout import Layout  # noqa: E402
from wtours.media import ffmpeg_exe, probe  # noqa: E402
from wtours.shard.params import RunOptions, ShardParams  # noqa: E402
from wtours.shard.run import shard_video  # noqa: E402


def bench_shards(loops: int = 10) -> tuple[Layout, Path]:
    root = Layout(DATA / "loader-root")
    looped = cached_video(f"street4k60-{12 * loops}s.mp4",
                          ["-stream_loop", str(loops - 1), "-i", str(street_4k60(12)), "-c", "copy"])
    if root.read_index("street") is None:
        add_local(looped, "street", root.root, mode="symlink", say=lambda m: None)
        shard_video(root, "street", ShardParams(), RunOptions(workers=os.cpu_count() or 1), say=print)
    return root, looped


def loader_rate(shards, config: LoaderConfig, batches: int, consume=lambda batch: None) -> float:
    """Clips per second after the first batch (which pays for worker start-up), over epochs as needed."""
    return timed_loader(shards, config, batches, consume)[0]


def timed_loader(shards, config: LoaderConfig, batches: int, consume=lambda batch: None,
                 dataset_type: type[ClipDataset] = ClipDataset) -> tuple[float, float]:
    """(clips per second, the workers' CPU ms per clip), both after the first batch of each epoch's
    loader (which pays for worker start-up), over epochs as needed."""
    dataset = dataset_type(shards, config)
    count, epoch, wall, cpu = 0, 0, 0.0, 0.0
    while count < batches:
        dataset.set_epoch(epoch)
        start, first, last = None, {}, {}
        for batch in make_loader(dataset):
            consume(batch)
            if start is None:
                start, first = time.perf_counter(), cpu_seconds(child_pids())
                continue
            last = cpu_seconds(first)  # read while the workers live: they exit when the loader is left
            count += 1
            if count == batches:
                break
        if start is not None:
            wall += time.perf_counter() - start
            cpu += sum(last[pid] - first[pid] for pid in last)
        epoch += 1
    clips = batches * config.batch_size
    return clips / wall, cpu * 1000 / clips


def child_pids() -> list[int]:
    """This process's live child processes: the DataLoader's workers."""
    me, pids = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _stat(int(entry.name)) and int(_stat(int(entry.name))[1]) == me:
            pids.append(int(entry.name))
    return pids


def cpu_seconds(pids) -> dict[int, float]:
    """CPU seconds (user + system) of each live process of `pids`."""
    tick, times = os.sysconf("SC_CLK_TCK"), {}
    for pid in pids:
        fields = _stat(pid)
        if fields:  # [11] / [12]: utime / stime in clock ticks
            times[pid] = (int(fields[11]) + int(fields[12])) / tick
    return times


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name ([0] the state, [1] the parent), [] once it exited."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def cpu_rate(shards, workers: int, batches: int, batch_size: int) -> float:
    return loader_rate(shards, LoaderConfig(batch_size=batch_size, workers=workers, shuffle_buffer=16), batches)


def gpu_rate(shards, batches: int, batch_size: int) -> float:
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


def baseline_module(rev: str) -> ModuleType:
    """`wtours/clips/augment_cpu.py` as of git revision `rev`, loaded as a module of its own."""
    repo = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "-C", str(repo), "show", f"{rev}:wtours/clips/augment_cpu.py"],
                            capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory(prefix="loader-bench-") as folder:
        path = Path(folder) / "augment_cpu_baseline.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("augment_cpu_baseline", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def decode_all_dataset(module: ModuleType) -> type[ClipDataset]:
    """The loader as pipeline.py had it before `multicrop_jpegs`: the whole batch decoded, then
    cropped, with `module`'s decode_clip and multicrop_cpu (the bench's shards decode: no failures
    to handle). DataLoader workers are forked, so they run `module` too."""

    class DecodeAllFirst(ClipDataset):
        def _augment(self, batch, rng):
            from wtours.clips.pipeline import ClipBatch

            frames = [module.decode_clip(clip.jpgs) for clip in batch]
            return ClipBatch(module.multicrop_cpu(frames, rng, self.config.multicrop), [c.key for c in batch])

    return DecodeAllFirst


class DecodeEachClipDataset(ClipDataset):
    """The loader with each clip decoded just before its crops (`augment_cpu.multicrop_jpegs`): the
    change proposed for `ClipDataset._augment` (same views, rows and failure counts)."""

    def _augment(self, batch, rng):
        from wtours.clips.augment_cpu import multicrop_jpegs
        from wtours.clips.pipeline import ClipBatch

        result = multicrop_jpegs([clip.jpgs for clip in batch], rng, self.config.multicrop)
        for i, error in result.failures:
            self.problems.clip_failed(batch[i].key, batch[i].url, error)
        assert result.sources, "no clip of the batch decodes"
        return ClipBatch(result.views, [batch[i].key for i in result.sources])


def compare_with_baseline(shards, rev: str, repeats: int, batches: int, batch_size: int) -> None:
    """The working tree's CPU path against `rev`'s, interleaved pair by pair (the order rotates)."""
    import wtours.clips.augment_cpu as current

    baseline = baseline_module(rev)
    batch = clip_jpgs(shards, 8)
    config = MultiCropConfig()
    # name -> (in-process run, the loader's dataset)
    contenders = {
        rev: (lambda rng: baseline.multicrop_cpu([baseline.decode_clip(c) for c in batch], rng, config),
              decode_all_dataset(baseline)),
        "working tree, batch decoded first": (
            lambda rng: current.multicrop_cpu([current.decode_clip(c) for c in batch], rng, config),
            decode_all_dataset(current)),
        "working tree, each clip decoded before its crops": (
            lambda rng: current.multicrop_jpegs(batch, rng, config), DecodeEachClipDataset),
    }
    names = list(contenders)
    rows: dict[str, dict[str, list[float]]] = {name: {"cpu": [], "rate": [], "worker": []} for name in names}
    loader_config = LoaderConfig(batch_size=batch_size, workers=1, shuffle_buffer=16)
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            run, _ = contenders[name]
            start = time.process_time()
            run(np.random.default_rng(r))  # the same draws for all
            rows[name]["cpu"].append((time.process_time() - start) * 1000 / len(batch))
        for name in order:
            rate, worker = timed_loader(shards, loader_config, batches, dataset_type=contenders[name][1])
            rows[name]["rate"].append(rate)
            rows[name]["worker"].append(worker)
        print(f"  round {r + 1}: " + "; ".join(
            f"{name}: {rows[name]['cpu'][-1]:.1f} ms in-process, 1 worker {rows[name]['rate'][-1]:.2f} clips/s, "
            f"worker CPU {rows[name]['worker'][-1]:.1f} ms" for name in names), flush=True)
    for key, label in (("cpu", "decode + multi-crop in one process, CPU ms per clip"),
                       ("worker", "1 worker, the worker's CPU ms per clip"),
                       ("rate", "1 worker, clips/s (wall clock)")):
        print(f"{label}:")
        old = np.array(rows[rev][key])
        for name in names:
            new = np.array(rows[name][key])
            ratios = old / new if key != "rate" else new / old
            print(f"  {name:50s} {np.median(new):7.2f}  speed-up over {rev}: median {np.median(ratios):.3f}x "
                  f"(rounds {ratios.min():.3f}-{ratios.max():.3f})")
    print("clips/s per core from the worker's CPU time (median): " + ", ".join(
        f"{name} {1000 / np.median(rows[name]['worker']):.2f}" for name in names))


def authors_style_rate(video: Path, clips: int) -> float:
    """Reopen the 4K video per clip, decode 8 full-resolution frames 60 apart, augment."""
    from PIL import Image

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
    from wtours.clips.spec import ShardRef

    root = Layout(DATA / "reading-root")
    if root.read_index("street") is None:
        looped = cached_video("street-loop26.avi", ["-stream_loop", "25", "-i", str(STREET), "-c", "copy"])
        add_local(looped, "street", root.root, mode="symlink", say=lambda m: None)
        shard_video(root, "street", ShardParams(), RunOptions(workers=1, progress=False), say=lambda m: None)
    ref: ShardRef = max(resolve("street", root.root), key=lambda r: r.samples)
    if ref.offsets is None:  # an index written before version 2: take the offsets from the tar itself
        import dataclasses
        import tarfile

        offsets: dict[str, int] = {}
        with tarfile.open(ref.url) as tar:
            for member in tar:
                offsets.setdefault(member.name.split(".")[0], member.offset)
        ref = dataclasses.replace(ref, offsets=tuple(offsets.values()))
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

    root, ref = reading_shard()
    mid = ref.samples // 2
    print(f"partial reads: {ref.name}, {ref.samples} samples, {Path(ref.url).stat().st_size / 1e6:.0f} MB; "
          f"reaching sample {mid} (one sample):")
    plain = dataclasses.replace(ref, offsets=None)
    rows = [("local seek", ShardRead(ref, frozenset(), mid, mid + 1)),
            ("local from start + skip", ShardRead(plain, frozenset(), mid, mid + 1))]
    for name, read in rows:
        ms, size = time_part(read)
        print(f"  {name:28s} {ms:8.1f} ms  {size / 1e6:7.2f} MB read")
    with FileServer(Path(ref.url).parent) as server:
        remote = dataclasses.replace(ref, url=server.url(ref.name))
        for name, read in (("http Range request", ShardRead(remote, frozenset(), mid, mid + 1)),
                           ("http from start + skip", ShardRead(dataclasses.replace(remote, offsets=None),
                                                                frozenset(), mid, mid + 1))):
            ms, size = time_part(read)
            print(f"  {name:28s} {ms:8.1f} ms  {size / 1e6:7.2f} MB read")
    # a 64 x 8 slot's typical part: about a quarter of a shard, from its middle
    quarter = ShardRead(ref, frozenset(), mid, mid + ref.samples // 4)
    ms, size = time_part(quarter, repeats=3)
    whole_ms, whole = time_part(ShardRead(ref, frozenset()), repeats=3)
    print(f"  a quarter of the shard (seek):  {ms:8.1f} ms  {size / 1e6:7.2f} MB; the whole shard: {whole_ms:.1f} ms "
          f"{whole / 1e6:.2f} MB")
    # the plan on a corpus-shaped set: 118 shards of up to 1000 samples at 2 fps, indexes only
    shards = []
    for v, count in enumerate([41, 17, 33, 27]):
        for n in range(count):
            last = 999 if n < count - 1 else 136 + 97 * v
            shards.append(ShardRef(url=f"w{v}-{n}", name=f"w{v}-{n}", slug=f"w{v}", samples=last + 1, fps=2.0,
                                   cell_runs=((n * 1000, n * 1000 + last),), t_start=n * 500.0,
                                   t_end=(n * 1000 + last) / 2))
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
                        help="compare the CPU path with wtours/clips/augment_cpu.py as of this git revision, only")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved pairs for --baseline")
    args = parser.parse_args()
    if args.reading_only:
        print(header("loader_bench (reading)"))
        reading_costs()
        return
    root, video = bench_shards()
    shards = resolve("street", root.root)
    cores = os.cpu_count() or 1
    torch.set_num_threads(1)
    print(header("loader_bench" + (f" (--baseline {args.baseline})" if args.baseline else "")))
    if args.baseline:
        compare_with_baseline(shards, args.baseline, args.repeats, args.batches, args.batch_size)
        return
    index = root.read_index("street")
    print(f"shards: {len(index['shards'])} x {index['shards'][0]['samples']} frames "
          f"{index['shards'][0]['name']}, {index['params']}")
    one, worker = timed_loader(shards, LoaderConfig(batch_size=args.batch_size, workers=1, shuffle_buffer=16),
                               args.batches)
    print(f"cpu path, 1 worker:      {one:6.2f} clips/s  (per core; the worker's CPU: {worker:.1f} ms per clip, "
          f"{1000 / worker:.2f} clips/s)")
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
    print(f"ratio cpu 1 worker / authors-style: {one / authors:.0f}x")
    reading_costs()


if __name__ == "__main__":
    main()
