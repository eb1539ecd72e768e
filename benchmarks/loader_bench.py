"""Clips per second of the DoRA data path from shards, per CPU core and with all cores.

Input: shards made with the default settings (2 fps, short side 512, quality 90) from a 4K60 street
clip (the 12 s clip of shard_bench looped to 2 min by stream copy). Measures
- the CPU path (DataLoader workers) with 1 worker and with workers = cores;
- decode + multi-crop per clip in one process, side by side (interleaved): wtours' CPU kernels
  against the authors' PIL operations (tests/reference_multicrop.py) on the same JPEGs;
- the GPU path: its workers' side (reading tars into clips of JPEGs) always, and decode + multi-crop
  on the device when CUDA is present;
- an authors-style baseline: per clip, reopen the 4K video, decode 8 full-size frames 60 source
  frames apart, and apply the PIL augmentation.

    python benchmarks/loader_bench.py [--batches 12] [--batch-size 8]
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
from common import DATA, cached_video, header, street_4k60  # noqa: E402

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

    jpgs = [s["jpg"] for _, s in zip(range(clips * 8), tar_samples(open_shards(shards[:1], Problems()), Problems()))]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--authors-clips", type=int, default=3)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
