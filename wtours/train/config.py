"""The training run's configuration: the authors' defaults (docs/dora-method.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from wtours.errors import WtoursError


@dataclass(frozen=True)
class TrainConfig:
    shards: tuple[str, ...]
    out: str
    root: str | None = None
    arch: str = "vit_small"
    out_dim: int = 65536
    n_local: int = 6
    objects: int = 3
    drop_path: float = 0.1
    norm_last_layer: bool = False
    epochs: int = 100
    steps: int | None = None  # stop after this many optimiser steps (overrides epochs)
    batch_size: int = 16  # clips per process
    clip_frames: int = 8
    clip_stride: float = 1.0
    clips_per_shard: int | None = None
    lr: float | None = None  # None: 0.0005 * global_batch / 256
    min_lr: float = 1e-5
    warmup_epochs: float = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum_teacher: float = 0.996
    clip_grad: float = 3.0
    freeze_last_layer: int = 1
    weighting: str = "authors"
    precision: str | None = None  # None: bf16 on GPU, fp32 on CPU
    compile: bool = False
    workers: int = 4
    augment: str = "cpu"
    shuffle_buffer: int = 64
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 10
    resume: bool = False
    init_from: str | None = None
    device: str | None = None  # None: cuda when available
    knn: dict = field(default_factory=dict)  # {"train": DIR, "val": DIR, "every": epochs}

    def __post_init__(self) -> None:
        if self.precision not in (None, "bf16", "fp16", "fp32"):
            raise WtoursError(f"--precision {self.precision}", "use bf16, fp16 or fp32")
        if self.steps is not None and self.steps < 1:
            raise WtoursError("--steps must be at least 1", "or use --epochs")
        if self.epochs < 1:
            raise WtoursError("--epochs must be at least 1", "")
        if self.weighting not in ("authors", "mean"):
            raise WtoursError(f"--weighting {self.weighting}", "use 'authors' (default) or 'mean'")

    def to_dict(self) -> dict:
        return asdict(self)
