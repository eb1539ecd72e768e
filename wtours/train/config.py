"""The training run's configuration, declared once with the authors' defaults (docs/dora.md); no torch import.
`wtours train` derives one option per field (wtours/config.py) and builds the model from `model`; the run
folder's config.json is `asdict(config)`, so `wtours train --config runs/x/config.json` runs it again."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from wtours.config import FRACTION, Checked, Range, option
from wtours.dora.config import DoRAConfig
from wtours.errors import UsageError
from wtours.layout import ROOT_URL_HINT, is_url

# Bounds far beyond any real run, so that a typo (an extra zero or three) fails at once rather than
# planning a run of centuries; the metadata flag "free" marks the settings a --resume may change
# (wtours/train/folder.py), "path" those naming local paths (kept out of published model cards).
EPOCHS = Range(1, 100_000)
STEPS = Range(1, 10**7)  # the schedules hold 3 floats per step (240 MB here); 10M steps is weeks at 10 steps/s
PER_PROCESS = Range(1, 1 << 16)  # clips in a batch or a shuffle buffer
SEED = Range(0, 2**32 - 1)  # numpy's seeds are 32-bit
DECAY = Range(0, 1e20)  # DINO's 0.04-0.4; finite and far above use: tests drive a run to divergence with 1e18


@dataclass(frozen=True)
class TrainConfig(Checked):
    shards: tuple[str, ...] = option(help="Shards: slug, folder, path pattern, http(s)://, hf://, s3:// (needs s3fs), "
                                          "gs:// (needs gcsfs) or file:// pattern, or 'pipe:COMMAND' (braces "
                                          "expanded, one command per shard; index.json beside its .tar argument); "
                                          "repeatable.", metavar="SPEC")
    out: str = option(help="Run folder: checkpoints, logs, config.json.", metavar="DIR", free=True, path=True)
    root: str | None = option(None, "Data root (default: $WTOURS_ROOT, else ~/.local/share/wtours).",
                              envvar="WTOURS_ROOT", metavar="DIR", free=True, path=True)
    model: DoRAConfig = field(default_factory=DoRAConfig)
    epochs: int = option(100, "Epochs; the schedules span them.", range=EPOCHS)
    steps: int | None = option(None, "Stop after this many optimiser steps; the schedules span them (overrides "
                                     "--epochs for the length; epochs still count passes over the data).",
                               range=STEPS)
    batch_size: int = option(16, "Clips per process.", range=PER_PROCESS)
    clip_frames: int = option(8, "Frames per clip.", range=Range(1, 1024))
    clip_stride: float = option(1.0, "Seconds between a clip's frames.", range=Range(0, 3600, open_low=True))
    clips_per_shard: int | None = option(None, "A random subset of clips per shard and epoch (default: all).",
                                         range=Range(1, 10**9))
    epoch_length: str = option("grid", "What an epoch is: 'grid', one pass over the shards' clip starts; "
                                       "'source-frames', the authors' epoch: as many clips as their loader has "
                                       "starts (one per source frame: source frames - clip frames x stride in "
                                       "frames), drawn from the shards' starts in whole passes and a seeded part "
                                       "of one more; steps per epoch as their DistributedSampler and "
                                       "drop_last DataLoader give (docs/dora.md).",
                               choices=("grid", "source-frames"))
    lr: float | None = option(None, "Peak learning rate (default: 0.0005 x global batch / 256, as the authors).",
                              range=Range(0, 1, open_low=True))
    min_lr: float = option(1e-5, "Learning rate at the end of the cosine.", range=Range(0, 1))
    warmup_epochs: float = option(10.0, "Linear lr warm-up from 0, in epochs: int(warmup_epochs x steps per "
                                        "epoch) iterations (fractions allowed).", range=Range(0, EPOCHS.high))
    weight_decay: float = option(0.04, "Weight decay at the start (cosine schedule).", range=DECAY)
    weight_decay_end: float = option(0.4, "Weight decay at the end.", range=DECAY)
    momentum_teacher: float = option(0.996, "Teacher EMA momentum at the start (cosine to 1).", range=FRACTION)
    clip_grad: float = option(3.0, "Per-parameter gradient-norm cap (0: no clipping).", range=Range(0, 1e6))
    freeze_last_layer: int = option(1, "Epochs during which the head's last layer is not updated.",
                                    range=Range(0, EPOCHS.high))
    precision: str | None = option(None, "Default: bf16 on GPU, fp32 on CPU.", choices=("bf16", "fp16", "fp32"),
                                   free=True)
    compile: bool = option(False, "torch.compile the backbones.", free=True)
    workers: int | None = option(None, "Data loader processes per process (default: the CPUs this process may "
                                       "use, divided among the processes torchrun starts on the node).",
                                 range=Range(0, 1024))
    augment: str = option("cpu", "Where JPEG decoding and multi-crop run.", choices=("cpu", "gpu"), free=True)
    shuffle_buffer: int = option(64, "Clips shuffled together in each loader worker.", range=PER_PROCESS)
    seed: int = option(0, "Seeds weights, heads, clips and crops.", range=SEED)
    checkpoint_every: int = option(1000, "Steps between checkpoints.", range=STEPS, free=True)
    log_every: int = option(10, "Steps between log.jsonl lines and progress lines (step/total, epoch, loss, "
                                "clips/s, ETA; -q silences them).", range=STEPS, free=True)
    resume: bool = option(False, "Continue from --out/checkpoint.pth.", free=True)
    overwrite: bool = option(False, "Start afresh in a run folder that holds a run: its checkpoint, logs, "
                                    "config.json, run.json and TensorBoard events are removed first (other files "
                                    "are left).", free=True)
    reschedule: bool = option(False, "With --resume (no effect without): accept changed settings that shape the "
                                     "schedules or the data (--steps, --epochs, --lr, --batch-size, world size, "
                                     "...); the schedules are recomputed for the new settings from the checkpoint's "
                                     "step, and run.json records the change.", free=True)
    init_from: str | None = option(None, "Start from a DoRA/DINO checkpoint.", metavar="FILE", free=True, path=True)
    device: str | None = option(None, "cuda, cuda:1 or cpu (default: cuda when available); checked before the "
                                      "run starts.", free=True)
    eval_every: int = option(1, "Epochs between the evaluations given (k-NN, linear probe, DAVIS), on rank 0; also "
                                "after the run's last step.", range=EPOCHS, free=True)
    knn_train: str | None = option(None, "ImageFolder for k-NN monitoring (with --knn-val).", metavar="DIR",
                                   free=True, path=True)
    knn_val: str | None = option(None, "ImageFolder for k-NN monitoring (with --knn-train).", metavar="DIR",
                                 free=True, path=True)
    knn_every: int | None = option(None, "Deprecated: --eval-every (what it sets).", range=EPOCHS, free=True)
    linear_train: str | None = option(None, "ImageFolder for a short linear probe while training (with "
                                            "--linear-val; `eval linear`'s fast mode).", metavar="DIR", free=True,
                                      path=True)
    linear_val: str | None = option(None, "ImageFolder for the linear probe (with --linear-train).", metavar="DIR",
                                    free=True, path=True)
    linear_epochs: int = option(10, "Epochs of that probe (features computed once, no augmentation).",
                                range=Range(1, 1000), free=True)
    davis: str | None = option(None, "DAVIS-2017 folder for label propagation (J&F) while training.",
                               metavar="DIR", free=True, path=True)
    davis_sequences: tuple[str, ...] = option((), "Only these sequences of its val list (repeatable; default: all).",
                                              metavar="NAME", free=True)

    def __post_init__(self) -> None:
        if not self.shards:
            raise UsageError("no shards to train on", "pass --shards SPEC (a slug, a path pattern or a URL)")
        super().__post_init__()
        for name, value in (("--root", self.root), ("--out", self.out)):
            if value and is_url(value):
                raise UsageError(f"{name} {value!r} is a URL; it must be a local folder",
                                 ROOT_URL_HINT if name == "--root" else "write the run to a local folder; "
                                 "`wtours export` and `wtours push --model` publish it")
        if self.epoch_length == "source-frames" and self.clips_per_shard is not None:
            raise UsageError("--clips-per-shard and --epoch-length source-frames both set the epoch's clips",
                             "pass one of them")
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite contradict each other",
                              "--resume continues the run in --out; --overwrite replaces it: pass one")
        for name, (train, val) in (("k-NN", (self.knn_train, self.knn_val)),
                                   ("linear", (self.linear_train, self.linear_val))):
            if bool(train) != bool(val):
                flag = "knn" if name == "k-NN" else name
                raise UsageError(f"{name} monitoring needs both --{flag}-train and --{flag}-val",
                                 "pass both, or neither")
        if self.davis_sequences and not self.davis:
            raise UsageError("--davis-sequences without --davis",
                             "pass --davis DIR too, or leave out --davis-sequences")
        if self.knn_every is not None:  # the old name (config.json of older runs holds it): folded into eval_every
            if self.eval_every not in (1, self.knn_every):
                raise UsageError(f"--knn-every {self.knn_every} and --eval-every {self.eval_every} contradict each "
                                 "other", "pass --eval-every only (--knn-every is its old name)")
            object.__setattr__(self, "eval_every", self.knn_every)
            object.__setattr__(self, "knn_every", None)

    def to_dict(self) -> dict:
        return asdict(self)
