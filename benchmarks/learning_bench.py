"""Learning shown: the same encoder at initialisation and after DoRA training, on evaluations that need no download.

1. Shards the repository's real street footage (tests/data/vtest.mp4, 20 s, 10 fps) at its full frame rate
   (--fps 10: 200 frames of 384x288), as `wtours shard` does, into --work/root.
2. Saves the initial weights (`wtours train`'s own seed and model builder: what its step 0 starts from), then
   trains DoRA on the shards for --steps steps with `wtours train`'s library call.
3. Evaluates the initial and the trained checkpoint (--which: the teacher by default) on:
   - label propagation (`wtours eval davis`, J&F-Mean) on DAVIS-layout sequences rendered from the footage:
     a frame panning slowly as the background, two elliptical pieces cut from other frames of the same
     footage moving over it (same colours, same kind of texture: not separable by colour alone); a
     "mean patch colour" row propagates with each patch's mean RGB as its feature, to show how far colour goes;
   - DINO's weighted k-NN (`wtours eval knn`, k=20) and the fast linear probe (`wtours eval linear --mode fast`)
     on scikit-learn's digits (1797 8x8 scans in its wheel: every 4th image val; resized to --image-size, 64 by
     default: a 4 x 4 patch grid), or on --digits FILE.npz
     (arrays `images`, `target`) where scikit-learn is missing;
   and prints them side by side with the difference, the budget, the machine and the wall time.

    python -m benchmarks.learning_bench --steps 120            # CPU: vit_micro, about 15 min on 2 loaded cores
    python -m benchmarks.learning_bench --arch vit_small --steps 600 --batch-size 32 --frames 8 --n-local 6 \\
        --out-dim 65536 --image-size 224 --workers 8 --device cuda                # a GPU (benchmarks/device_check.sh)
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks.common import DATA, STREET, header
from wtours.dora.config import DoRAConfig
from wtours.eval.config import DavisConfig, KnnConfig, LinearConfig
from wtours.eval.data import labelled_pair
from wtours.eval.davis import davis_checkpoint, davis_palette, read_layout, score, segment_sequence
from wtours.eval.knn import evaluate_knn
from wtours.eval.linear import linear_probe
from wtours.fetch.local import add_local
from wtours.layout import CHECKPOINT_FILE, Layout
from wtours.models.checkpoint import load_backbone, save_checkpoint
from wtours.shard.params import RunOptions, ShardParams
from wtours.shard.read import iter_shard
from wtours.shard.run import shard_video
from wtours.train.config import TrainConfig
from wtours.train.run import build_model, train

SLUG = "street"
SEQ_H, SEQ_W = 192, 320  # rendered sequences: a 12 x 20 patch grid at patch 16


def shard_footage(root: Path, fps: float) -> list[np.ndarray]:
    """The street footage sharded under root (once: a rerun with the same settings reuses it); its frames (RGB)."""
    layout = Layout(root)
    add_local(STREET, SLUG, root, mode="link", say=lambda line: None)
    shard_video(layout, SLUG, ShardParams(fps=fps, short_side=288, samples_per_shard=50),
                RunOptions(workers=2, progress=False), say=lambda line: None)
    return [np.asarray(Image.open(io.BytesIO(s.jpg)).convert("RGB"))
            for tar in sorted(layout.shard_dir(SLUG).glob("*.tar")) for s in iter_shard(tar)]


def render_davis(folder: Path, frames: list[np.ndarray], sequences: int, length: int, seed: int = 0) -> Path:
    """DAVIS-2017 layout: per sequence a background frame panning 2 px a frame, and two ellipses cut from two
    other frames (labels 1, 2; the second drawn over the first) moving 3-7 px a frame, bouncing at the edges."""
    rng = np.random.default_rng(seed)
    names = [f"street{i}" for i in range(sequences)]
    for name in names:
        images, annotations = folder / "JPEGImages/480p" / name, folder / "Annotations/480p" / name
        images.mkdir(parents=True)
        annotations.mkdir(parents=True)
        background = frames[rng.integers(len(frames))]
        y0 = rng.integers(background.shape[0] - SEQ_H + 1)
        x0 = rng.integers(background.shape[1] - SEQ_W - 2 * length + 1)
        objects = []
        for _ in range(2):
            h, w = rng.integers(56, 88, size=2)
            source = frames[rng.integers(len(frames))]
            sy, sx = rng.integers(source.shape[0] - h + 1), rng.integers(source.shape[1] - w + 1)
            yy, xx = np.mgrid[:h, :w]
            shape = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2 <= 1
            position = np.array([rng.integers(SEQ_H - h + 1), rng.integers(SEQ_W - w + 1)], float)
            velocity = rng.uniform(3, 7, size=2) * rng.choice([-1, 1], size=2)
            objects.append([source[sy:sy + h, sx:sx + w], shape, position, velocity])
        for t in range(length):
            image = background[y0:y0 + SEQ_H, x0 + 2 * t:x0 + 2 * t + SEQ_W].copy()
            labels = np.zeros((SEQ_H, SEQ_W), np.uint8)
            for label, (piece, shape, position, velocity) in enumerate(objects, 1):
                y, x = position.astype(int)
                h, w = shape.shape
                image[y:y + h, x:x + w][shape] = piece[shape]
                labels[y:y + h, x:x + w][shape] = label
                position += velocity
                for axis, limit in enumerate((SEQ_H - h, SEQ_W - w)):
                    if not 0 <= position[axis] <= limit:
                        velocity[axis] *= -1
                        position[axis] = np.clip(position[axis], 0, limit)
            Image.fromarray(image).save(images / f"{t:05d}.jpg", quality=95)
            mask = Image.fromarray(labels)
            mask.putpalette(davis_palette())
            mask.save(annotations / f"{t:05d}.png")
    (folder / "ImageSets/2017").mkdir(parents=True)
    (folder / "ImageSets/2017/val.txt").write_text("".join(f"{n}\n" for n in names))
    return folder


def write_digits(folder: Path, npz: str | None = None) -> tuple[Path, Path]:
    """Digits as 32x32 PNGs, train/<digit>/ and (every 4th) val/<digit>/, as docs/eval.md's script writes them."""
    if npz:
        data = np.load(npz)
        images, target = data["images"], data["target"]
    else:
        from sklearn.datasets import load_digits  # the `test` extra

        digits = load_digits()
        images, target = digits.images, digits.target
    for i, (pixels, label) in enumerate(zip(images, target)):
        where = folder / ("val" if i % 4 == 0 else "train") / str(label)
        where.mkdir(parents=True, exist_ok=True)
        grey = np.rint(pixels * 255 / 16).astype(np.uint8)
        Image.fromarray(grey).resize((32, 32), Image.Resampling.NEAREST).save(where / f"{i:04d}.png")
    return folder / "train", folder / "val"


class MeanColour(torch.nn.Module):
    """A stand-in backbone for label propagation whose patch features are the patches' mean (normalised) RGB."""

    config = SimpleNamespace(patch_size=16)

    def forward_last_attention(self, images: torch.Tensor) -> SimpleNamespace:
        patches = F.avg_pool2d(images, 16).flatten(2).transpose(1, 2)  # (B, N, 3)
        return SimpleNamespace(tokens=torch.cat([patches[:, :1], patches], dim=1))  # a dummy [CLS] first


def colour_jf(davis: Path, out: Path, config: DavisConfig) -> float:
    sequences = read_layout(davis)
    for sequence in sequences:
        (out / sequence.name).mkdir(parents=True)
        segment_sequence(MeanColour(), sequence, config, torch.device("cpu"), out / sequence.name)
    return score(sequences, out).jf_mean


def evaluate(checkpoint: Path, work: Path, args: argparse.Namespace) -> dict[str, float]:
    """J&F, k-NN top-1/top-5 and the fast linear probe's top-1 of one checkpoint's backbone (--which)."""
    tag = checkpoint.stem
    backbone, _ = load_backbone(checkpoint, which=args.which)
    size = args.image_size
    train_set, val_set = labelled_pair(work / "digits/train", work / "digits/val", size, size)
    knn = evaluate_knn(backbone.to(args.device), train_set, val_set, KnnConfig(resize=size, crop=size), args.device)
    davis, _ = davis_checkpoint(checkpoint, work / "davis", work / f"davis-{tag}", DavisConfig(short_side=SEQ_H),
                                which=args.which, device=args.device, progress=lambda line: None)
    probe, _ = linear_probe(checkpoint, LinearConfig(
        train=str(work / "digits/train"), val=str(work / "digits/val"), out=str(work / f"linear-{tag}"),
        key=args.which, mode="fast", epochs=args.probe_epochs, lr=1.0, workers=0, device=args.device,
        save_every=1e9, resize=size, crop=size), say=lambda line: None)
    return {"J&F-Mean (label propagation)": 100 * davis.jf_mean, "J-Mean": 100 * davis.j_mean,
            "F-Mean": 100 * davis.f_mean, "k-NN top-1 (digits)": knn.top1, "k-NN top-5 (digits)": knn.top5,
            "linear probe top-1 (digits, fast)": probe["top1"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=120, help="the training budget, in optimiser steps")
    parser.add_argument("--arch", default="vit_micro")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=4, help="frames per clip")
    parser.add_argument("--stride", type=float, default=0.5, help="seconds between a clip's frames")
    parser.add_argument("--n-local", type=int, default=2)
    parser.add_argument("--out-dim", type=int, default=4096)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--fps", type=float, default=10.0, help="frames sharded per second of the 20 s footage")
    parser.add_argument("--which", default="teacher", choices=("teacher", "student"))
    parser.add_argument("--sequences", type=int, default=6, help="rendered label-propagation sequences")
    parser.add_argument("--length", type=int, default=12, help="frames per rendered sequence")
    parser.add_argument("--probe-epochs", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=64,
                        help="digits resized to this side (the k-NN and linear protocols' 224 costs 12x more on a CPU)")
    parser.add_argument("--digits", help="digits as FILE.npz (images, target) instead of scikit-learn's")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=DATA / "learning",
                        help="shards (kept for reruns), rendered data, checkpoints and evaluations (made afresh)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(header("learning_bench") + f" | {device} | torch {torch.__version__}", flush=True)
    work = args.work
    for made in ("davis", "digits", "run", "davis-init", "davis-checkpoint", "davis-colour", "linear-init",
                 "linear-checkpoint", "init.pth"):
        path = work / made
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    frames = shard_footage(work / "root", args.fps)
    render_davis(work / "davis", frames, args.sequences, args.length, args.seed)
    write_digits(work / "digits", args.digits)

    config = TrainConfig(shards=(SLUG,), root=str(work / "root"), out=str(work / "run"), model=DoRAConfig(
        arch=args.arch, out_dim=args.out_dim, n_local=args.n_local), batch_size=args.batch_size,
        clip_frames=args.frames, clip_stride=args.stride, steps=args.steps, lr=args.lr, warmup_epochs=1.0,
        workers=args.workers, log_every=max(1, args.steps // 10), checkpoint_every=args.steps, seed=args.seed,
        device=args.device, overwrite=True)
    torch.manual_seed(config.seed)  # as `wtours train` seeds its model: the weights its step 0 starts from
    initial = build_model(config, torch.device("cpu"))
    save_checkpoint(work / "init.pth", {"student": initial.student.state_dict(),
                                        "teacher": initial.teacher.state_dict()})
    print(f"{len(frames)} frames of {frames[0].shape[1]}x{frames[0].shape[0]} sharded; training {args.arch} for "
          f"{args.steps} steps (B={args.batch_size}, T={args.frames}, {args.n_local} local views, out "
          f"{args.out_dim}, lr {args.lr:g}) on {args.device}", flush=True)
    trained_at = time.monotonic()
    state = train(config, say=lambda line: print("  " + line, flush=True))
    train_seconds = time.monotonic() - trained_at
    log = [json.loads(line) for line in (work / "run/log.jsonl").read_text().splitlines() if '"loss"' in line]

    before = evaluate(work / "init.pth", work, args)
    after = evaluate(work / "run" / CHECKPOINT_FILE, work, args)
    colour = 100 * colour_jf(work / "davis", work / "davis-colour", DavisConfig(short_side=SEQ_H))
    print(f"\nbudget: {state.step} steps in {train_seconds:.0f} s ({args.device}), loss {log[0]['loss']:.3f} -> "
          f"{log[-1]['loss']:.3f}; {args.which} backbone; {args.sequences} rendered sequences of {args.length} "
          f"frames; digits {sum(1 for _ in (work / 'digits/train').rglob('*.png'))} train / "
          f"{sum(1 for _ in (work / 'digits/val').rglob('*.png'))} val")
    width = max(map(len, before))
    print(f"{'evaluation':<{width}}  {'init':>7}  {'trained':>7}  {'change':>7}")
    for name in before:
        print(f"{name:<{width}}  {before[name]:7.2f}  {after[name]:7.2f}  {after[name] - before[name]:+7.2f}")
    print(f"{'J&F-Mean, mean patch colour features':<{width}}  {colour:7.2f}")
    print(f"total {time.monotonic() - started:.0f} s")
    return {"init": before, "trained": after, "colour_jf": colour, "steps": state.step, "train_seconds": train_seconds}


if __name__ == "__main__":
    main()
