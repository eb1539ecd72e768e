"""The training run's configuration, declared once: the authors' defaults (docs/dora.md).

`wtours train` derives one option per field (wtours/config.py), the model is built from `model`,
and the run folder's config.json is `asdict(config)`: `wtours train --config runs/x/config.json`
runs it again. No torch import here."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field

from wtours.dora.config import DoRAConfig
from wtours.errors import UsageError
from wtours.layout import ROOT_URL_HINT, is_url


@dataclass(frozen=True)
class Range:
    """A numeric field's allowed values, declared with the field (metadata "range") and checked by
    `check_ranges` when a config is built: `low`/`high` bound it (None: unbounded), `open_low`/
    `open_high` exclude the bound. NaN and infinity never fit."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and not (value > self.low if self.open_low else value >= self.low):
            return False
        if self.high is not None and not (value < self.high if self.open_high else value <= self.high):
            return False
        return True

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.open_high else '<='} {self.high:g}"
        return f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"


AT_LEAST_1 = Range(1)
NOT_NEGATIVE = Range(0)
POSITIVE = Range(0, open_low=True)


def check_ranges(config) -> None:
    """Every field of `config` (a dataclass) that declares metadata["range"] holds a value in it."""
    for f in dataclasses.fields(config):
        allowed, value = f.metadata.get("range"), getattr(config, f.name)
        if allowed is None or value is None or isinstance(value, bool):
            continue
        if value not in allowed:
            option = "--" + f.name.replace("_", "-")
            raise UsageError(f"{option} must be {allowed} (got {value})", f"pass {option} with a value {allowed}")


def _opt(default, help: str, **meta):  # noqa: A002 (the metadata key Click calls help)
    if "range" in meta:  # the option's help states its range
        help = f"{help} Must be {meta['range']}."  # noqa: A001
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class TrainConfig:
    shards: tuple[str, ...] = field(metadata={
        "metavar": "SPEC", "help": "Shards: slug, folder, path pattern, http(s)://, hf://, s3:// (needs s3fs), "
                                   "gs:// (needs gcsfs) or file:// pattern, or 'pipe:COMMAND' (braces expanded, "
                                   "one command per shard; index.json beside its .tar argument); repeatable."})
    out: str = field(metadata={"metavar": "DIR", "help": "Run folder: checkpoints, logs, config.json."})
    root: str | None = _opt(None, "Data root (default: $WTOURS_ROOT, else ~/.local/share/wtours).",
                            envvar="WTOURS_ROOT", metavar="DIR")
    model: DoRAConfig = field(default_factory=DoRAConfig)
    epochs: int = _opt(100, "Epochs; the schedules span them.", range=AT_LEAST_1)
    steps: int | None = _opt(None, "Stop after this many optimiser steps; the schedules span them (overrides "
                                   "--epochs for the length; epochs still count passes over the data).",
                             range=AT_LEAST_1)
    batch_size: int = _opt(16, "Clips per process.", range=AT_LEAST_1)
    clip_frames: int = _opt(8, "Frames per clip.", range=AT_LEAST_1)
    clip_stride: float = _opt(1.0, "Seconds between a clip's frames.", range=POSITIVE)
    clips_per_shard: int | None = _opt(None, "A random subset of clips per shard and epoch (default: all).",
                                       range=AT_LEAST_1)
    lr: float | None = _opt(None, "Peak learning rate (default: 0.0005 x global batch / 256, as the authors).",
                            range=Range(0, 1, open_low=True))
    min_lr: float = _opt(1e-5, "Learning rate at the end of the cosine.", range=Range(0, 1))
    warmup_epochs: float = _opt(10.0, "Linear lr warm-up from 0, in epochs: int(warmup_epochs x steps per "
                                      "epoch) iterations (fractions allowed).", range=NOT_NEGATIVE)
    weight_decay: float = _opt(0.04, "Weight decay at the start (cosine schedule).", range=NOT_NEGATIVE)
    weight_decay_end: float = _opt(0.4, "Weight decay at the end.", range=NOT_NEGATIVE)
    momentum_teacher: float = _opt(0.996, "Teacher EMA momentum at the start (cosine to 1).", range=Range(0, 1))
    clip_grad: float = _opt(3.0, "Per-parameter gradient-norm cap (0: no clipping).", range=NOT_NEGATIVE)
    freeze_last_layer: int = _opt(1, "Epochs during which the head's last layer is not updated.", range=NOT_NEGATIVE)
    precision: str | None = _opt(None, "Default: bf16 on GPU, fp32 on CPU.", choices=("bf16", "fp16", "fp32"))
    compile: bool = _opt(False, "torch.compile the backbones.")
    workers: int | None = _opt(None, "Data loader processes per process (default: the CPUs this process may "
                                     "use, divided among the processes torchrun starts on the node).",
                             range=NOT_NEGATIVE)
    augment: str = _opt("cpu", "Where JPEG decoding and multi-crop run.", choices=("cpu", "gpu"))
    shuffle_buffer: int = _opt(64, "Clips shuffled together in each loader worker.", range=AT_LEAST_1)
    seed: int = _opt(0, "Seeds weights, heads, clips and crops.", range=NOT_NEGATIVE)
    checkpoint_every: int = _opt(1000, "Steps between checkpoints.", range=AT_LEAST_1)
    log_every: int = _opt(10, "Steps between log.jsonl lines and progress lines (step/total, epoch, loss, "
                                "clips/s, ETA; -q silences them).", range=AT_LEAST_1)
    resume: bool = _opt(False, "Continue from --out/checkpoint.pth.")
    overwrite: bool = _opt(False, "Start afresh in a run folder that holds a run: its checkpoint, logs, config.json, "
                                  "run.json and TensorBoard events are removed first (other files are left).")
    reschedule: bool = _opt(False, "With --resume (no effect without): accept changed settings that shape the "
                                   "schedules or the data (--steps, --epochs, --lr, --batch-size, world size, ...); "
                                   "the schedules are recomputed for the new settings from the checkpoint's step, "
                                   "and run.json records the change.")
    init_from: str | None = _opt(None, "Start from a DoRA/DINO checkpoint.", metavar="FILE")
    device: str | None = _opt(None, "cuda, cuda:1 or cpu (default: cuda when available); checked before the run "
                                    "starts.")
    knn_train: str | None = _opt(None, "ImageFolder for k-NN monitoring (with --knn-val).", metavar="DIR")
    knn_val: str | None = _opt(None, "ImageFolder for k-NN monitoring (with --knn-train).", metavar="DIR")
    knn_every: int = _opt(1, "Epochs between k-NN evaluations.", range=AT_LEAST_1)

    def __post_init__(self) -> None:
        if not self.shards:
            raise UsageError("no shards to train on", "pass --shards SPEC (a slug, a path pattern or a URL)")
        if self.precision not in (None, "bf16", "fp16", "fp32"):
            raise UsageError(f"--precision {self.precision}", "use bf16, fp16 or fp32")
        check_ranges(self)
        for option, value in (("--root", self.root), ("--out", self.out)):
            if value and is_url(value):
                raise UsageError(f"{option} {value!r} is a URL; it must be a local folder",
                                 ROOT_URL_HINT if option == "--root" else "write the run to a local folder; "
                                 "`wtours export` and `wtours push --model` publish it")
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite contradict each other",
                              "--resume continues the run in --out; --overwrite replaces it: pass one")
        if bool(self.knn_train) != bool(self.knn_val):
            raise UsageError("k-NN monitoring needs both --knn-train and --knn-val", "pass both, or neither")

    def to_dict(self) -> dict:
        return asdict(self)
