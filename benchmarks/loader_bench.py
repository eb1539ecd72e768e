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
- the cost of partial shard reads (the epoch plan hands each slot parts of shards): time and bytes to
  reach the middle sample of a 1000-sample shard by seek / http Range request against reading from
  the start and skipping, and the plan's clips read / distinct clips for 8 x 10 and 64 x 8 slots on a
  corpus-shaped set (`--reading-only` runs just this part).

    python benchmarks/loader_bench.py [--batches 12] [--batch-size 8] [--reading-only]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import DATA, STREET, cached_video, header, street_4k60  # noqa: E402

from tests.reference_multicrop import multicrop_pil  # noqa: E402
from wtours.clips.augment import MultiCropConfig  # noqa: E402
from wtours.clips.augment_cpu import decode_clip, multicrop_cpu  # noqa: E402
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
    dataset = ClipDataset(shards, config)
    count, start, epoch = 0, None, 0
    while count < batches:
        dataset.set_epoch(epoch)
        for batch in make_loader(dataset):
            consume(batch)
            if start is None:
                start = time.perf_counter()
                continue
            count += 1
            if count == batches:
                break
        epoch += 1
    return batches * config.batch_size / (time.perf_counter() - start)


def cpu_rate(shards, workers: int, batches: int, batch_size: int) -> float:
    return loader_rate(shards, LoaderConfig(batch_size=batch_size, workers=workers, shuffle_buffer=16), batches)


def gpu_rate(shards, batches: int, batch_size: int) -> float:
    config = LoaderConfig(batch_size=batch_size, workers=os.cpu_count() or 1, augment="gpu", shuffle_buffer=16)
    augment = GpuAugmenter(config.multicrop, "cuda")

    def consume(raw) -> None:
        augment(raw)
        torch.cuda.synchronize()

    return loader_rate(shards, config, batches, consume)


def augment_costs(shards, clips: int, repeats: int) -> tuple[float, float]:
    """ms per clip for decode + multi-crop: wtours' CPU kernels vs the authors' PIL operations, interleaved."""
    import io

    from PIL import Image

    from wtours.clips.stages import Problems, open_shards, tar_samples

    jpgs = [s.jpg for _, s in zip(range(clips * 8), tar_samples(open_shards(shards[:1], Problems()), Problems()))]
    batch = [jpgs[i * 8:(i + 1) * 8] for i in range(clips)]
    config, rng = MultiCropConfig(), np.random.default_rng(0)

    def pil() -> None:
        for clip in batch:
            multicrop_pil([Image.open(io.BytesIO(j)).convert("RGB") for j in clip], rng, config)

    times = {"wtours": [], "pil": []}
    for _ in range(repeats):
        for name, run in (("wtours", lambda: multicrop_cpu([decode_clip(c) for c in batch], rng, config)),
                          ("pil", pil)):
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1000 / clips)
    return float(np.median(times["wtours"])), float(np.median(times["pil"]))


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
    args = parser.parse_args()
    if args.reading_only:
        print(header("loader_bench (reading)"))
        reading_costs()
        return
    root, video = bench_shards()
    shards = resolve("street", root.root)
    cores = os.cpu_count() or 1
    torch.set_num_threads(1)
    print(header("loader_bench"))
    index = root.read_index("street")
    print(f"shards: {len(index['shards'])} x {index['shards'][0]['samples']} frames "
          f"{index['shards'][0]['name']}, {index['params']}")
    one = cpu_rate(shards, 1, args.batches, args.batch_size)
    print(f"cpu path, 1 worker:      {one:6.2f} clips/s  (per core)")
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
