"""Clips per second of the DoRA training step, ours against a plain authors-style step, side by side.

Synthetic clips (B in --batch-sizes, T=8, 6 local views, the model's default out_dim) through one full step
(forward, backward, per-tensor clipping, AdamW, EMA, centre), for:
- wtours: batched frames, fused attention except the teacher's last block, foreach updates;
- authors-style: the plain transcription in tests/reference_dora.py (per-frame and per-object
  loops, explicit attention in every block) with the same optimiser step;
- wtours from shards (--shards SPEC): the same step fed by the real loader.
On CUDA the step runs in bf16 autocast (and compiled with --compile); on CPU in fp32. On a CPU the
defaults are far too large: pass e.g. --arch vit_micro --frames 2 --n-local 2 --out-dim 4096 --batch-sizes 2.

    python -m benchmarks.train_bench --batch-sizes 16 32 [--compile] [--shards venice --root R]
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import header
from tests.reference_dora import reference_loss
from wtours.dora import DoRA
from wtours.dora.config import DoRAConfig
from wtours.train.optim import param_groups
from wtours.train.run import StepSettings, train_step


def synthetic(batch: int, frames: int, n_local: int, device: torch.device) -> list[torch.Tensor]:
    return ([torch.randn(batch, frames, 3, 224, 224, device=device)]
            + [torch.randn(batch, frames, 3, 112, 112, device=device) for _ in range(n_local)])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step, crops_for, steps: int, warmup: int, device: torch.device) -> float:
    for i in range(warmup):
        step(crops_for(i))
    sync(device)
    start = time.perf_counter()
    for i in range(steps):
        step(crops_for(i))
    sync(device)
    return (time.perf_counter() - start) / steps


def make_step(model: DoRA, settings: StepSettings, authors_style: bool):
    optimizer = torch.optim.AdamW(param_groups(model.student))
    scaler = torch.amp.GradScaler(enabled=False)

    def ours(crops):
        train_step(model, model.student, crops, optimizer, scaler, settings)

    def authors(crops):
        with torch.autocast(crops[0].device.type, dtype=settings.autocast_dtype or torch.float32,
                            enabled=settings.autocast_dtype is not None):
            loss = reference_loss(model, crops, model.draw_heads().tolist(), model.loss.center)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for p in model.student.parameters():  # the authors' clipping: one host sync per parameter
            if p.grad is not None:
                norm = p.grad.norm().item()
                if 3.0 / (norm + 1e-6) < 1:
                    p.grad.mul_(3.0 / (norm + 1e-6))
        optimizer.step()
        with torch.no_grad():
            for t, s in zip(model.teacher.parameters(), model.student.parameters()):
                t.mul_(settings.momentum).add_((1 - settings.momentum) * s.detach())

    return authors if authors_style else ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="vit_small")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--n-local", type=int, default=6)
    parser.add_argument("--out-dim", type=int, default=DoRAConfig.out_dim)  # the model's one declaration
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--skip-authors", action="store_true")
    parser.add_argument("--shards", help="also time the step fed by the real loader from this SPEC")
    parser.add_argument("--root")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else None
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(header("train_bench") + f" | {name} | torch {torch.__version__}")
    print(f"{args.arch}, T={args.frames}, {args.n_local} local views, out {args.out_dim}, "
          f"{'bf16' if dtype else 'fp32'}{', compiled' if args.compile else ''}")
    for batch in args.batch_sizes:
        model = DoRA(args.arch, out_dim=args.out_dim, n_local=args.n_local).to(device)
        if args.compile:
            model.student.backbone.forward = torch.compile(model.student.backbone.forward)
            model.teacher.backbone.forward_last_attention = torch.compile(model.teacher.backbone.forward_last_attention)
        settings = StepSettings(1e-4, 0.04, 0.996, epoch=1, autocast_dtype=dtype)
        pool = [synthetic(batch, args.frames, args.n_local, device) for _ in range(2)]
        ours = time_steps(make_step(model, settings, False), lambda i, pool=pool: pool[i % 2], args.steps,
                          args.warmup, device)
        line = f"B={batch:3d}: wtours {batch / ours:8.2f} clips/s"
        if not args.skip_authors:
            model = DoRA(args.arch, out_dim=args.out_dim, n_local=args.n_local).to(device)
            authors = time_steps(make_step(model, settings, True), lambda i, pool=pool: pool[i % 2],
                                 max(2, args.steps // 3),
                                 1, device)
            line += f" | authors-style {batch / authors:8.2f} clips/s | ratio {authors / ours:5.2f}x"
        if args.shards:
            line += f" | from shards {batch / shard_step_seconds(args, batch, device, settings):8.2f} clips/s"
        if device.type == "cuda":  # the most any of this batch size's steps held
            line += f" | peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
            torch.cuda.reset_peak_memory_stats()
        print(line, flush=True)


def shard_step_seconds(args, batch: int, device: torch.device, settings: StepSettings) -> float:
    from wtours.clips.augment import MultiCropConfig
    from wtours.clips.epoch import ClipConfig
    from wtours.clips.pipeline import ClipDataset, GpuAugmenter, LoaderConfig, make_loader
    from wtours.clips.spec import resolve

    augment = "gpu" if device.type == "cuda" else "cpu"
    config = LoaderConfig(batch_size=batch, workers=args.workers, augment=augment,
                          clip=ClipConfig(frames=args.frames), multicrop=MultiCropConfig(n_local=args.n_local))
    dataset = ClipDataset(resolve(args.shards, args.root), config)
    gpu = GpuAugmenter(config.multicrop, device) if augment == "gpu" else None
    model = DoRA(args.arch, out_dim=args.out_dim, n_local=args.n_local).to(device)
    step = make_step(model, settings, False)
    done, start, epoch = 0, None, 0
    while done < args.steps:
        dataset.set_epoch(epoch)
        for raw in make_loader(dataset, pin_memory=device.type == "cuda"):
            crops = gpu(raw) if gpu else raw.to(device, non_blocking=True).normalised()  # uint8 -> float on the device
            step(list(crops))
            if start is None and done + 1 >= args.warmup:
                sync(device)
                start, done = time.perf_counter(), 0
                continue
            done += 1
            if done >= args.steps:
                break
        epoch += 1
    sync(device)
    return (time.perf_counter() - start) / done


if __name__ == "__main__":
    main()
