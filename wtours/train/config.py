"""The training run's configuration, declared once: the authors' defaults (docs/dora.md).

`wtours train` derives one option per field (wtours/config.py), the model is built from `model`,
and the run folder's config.json is `asdict(config)`: `wtours train --config runs/x/config.json`
runs it again. No torch import here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from wtours.dora.config import DoRAConfig
from wtours.errors import WtoursError


def _opt(default, help: str, **meta):  # noqa: A002 (the metadata key Click calls help)
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class TrainConfig:
    shards: tuple[str, ...] = field(metadata={
        "metavar": "SPEC", "help": "Shards: slug, path pattern, http(s):// or hf:// pattern; repeatable."})
    out: str = field(metadata={"metavar": "DIR", "help": "Run folder: checkpoints, logs, config.json."})
    root: str | None = _opt(None, "Data root (default: $WTOURS_ROOT, else ~/.local/share/wtours).",
                            envvar="WTOURS_ROOT", metavar="DIR")
    model: DoRAConfig = field(default_factory=DoRAConfig)
    epochs: int = _opt(100, "Epochs; the schedules span them.")
    steps: int | None = _opt(None, "Stop after this many optimiser steps; the schedules span them (overrides "
                                   "--epochs for the length; epochs still count passes over the data).")
    batch_size: int = _opt(16, "Clips per process.")
    clip_frames: int = _opt(8, "Frames per clip.")
    clip_stride: float = _opt(1.0, "Seconds between a clip's frames.")
    clips_per_shard: int | None = _opt(None, "A random subset of clips per shard and epoch (default: all).")
    lr: float | None = _opt(None, "Peak learning rate (default: 0.0005 x global batch / 256, as the authors).")
    min_lr: float = _opt(1e-5, "Learning rate at the end of the cosine.")
    warmup_epochs: float = _opt(10.0, "Linear lr warm-up from 0, in epochs: int(warmup_epochs x steps per "
                                      "epoch) iterations (fractions allowed).")
    weight_decay: float = _opt(0.04, "Weight decay at the start (cosine schedule).")
    weight_decay_end: float = _opt(0.4, "Weight decay at the end.")
    momentum_teacher: float = _opt(0.996, "Teacher EMA momentum at the start (cosine to 1).")
    clip_grad: float = _opt(3.0, "Per-parameter gradient-norm cap (0: no clipping).")
    freeze_last_layer: int = _opt(1, "Epochs during which the head's last layer is not updated.")
    precision: str | None = _opt(None, "Default: bf16 on GPU, fp32 on CPU.", choices=("bf16", "fp16", "fp32"))
    compile: bool = _opt(False, "torch.compile the backbones.")
    workers: int | None = _opt(None, "Data loader processes per process (default: the CPUs this process may "
                                     "use, divided among the processes torchrun starts on the node).")
    augment: str = _opt("cpu", "Where JPEG decoding and multi-crop run.", choices=("cpu", "gpu"))
    shuffle_buffer: int = _opt(64, "Clips shuffled together in each loader worker.")
    seed: int = _opt(0, "Seeds weights, heads, clips and crops.")
    checkpoint_every: int = _opt(1000, "Steps between checkpoints.")
    log_every: int = _opt(10, "Steps between log.jsonl lines.")
    resume: bool = _opt(False, "Continue from --out/checkpoint.pth.")
    init_from: str | None = _opt(None, "Start from a DoRA/DINO checkpoint.", metavar="FILE")
    device: str | None = _opt(None, "cuda, cuda:1 or cpu (default: cuda when available).")
    knn_train: str | None = _opt(None, "ImageFolder for k-NN monitoring (with --knn-val).", metavar="DIR")
    knn_val: str | None = _opt(None, "ImageFolder for k-NN monitoring (with --knn-train).", metavar="DIR")
    knn_every: int = _opt(1, "Epochs between k-NN evaluations.")

    def __post_init__(self) -> None:
        if not self.shards:
            raise WtoursError("no shards to train on", "pass --shards SPEC (a slug, a path pattern or a URL)")
        if self.precision not in (None, "bf16", "fp16", "fp32"):
            raise WtoursError(f"--precision {self.precision}", "use bf16, fp16 or fp32")
        if self.steps is not None and self.steps < 1:
            raise WtoursError("--steps must be at least 1", "or use --epochs")
        if self.epochs < 1:
            raise WtoursError("--epochs must be at least 1", "")
        if self.warmup_epochs < 0 or self.batch_size < 1:
            raise WtoursError("--warmup-epochs must be >= 0 and --batch-size >= 1", "")
        if bool(self.knn_train) != bool(self.knn_val):
            raise WtoursError("k-NN monitoring needs both --knn-train and --knn-val", "pass both, or neither")

    def to_dict(self) -> dict:
        return asdict(self)
