"""The DoRA model's settings, declared once: the authors' defaults (docs/dora.md), no torch import.

`DoRA(config)` is built from a `DoRAConfig`; `wtours train` derives its options from these fields
(wtours/config.py), and a run folder's config.json records them."""

from __future__ import annotations

from dataclasses import dataclass, field

from wtours.errors import UsageError
from wtours.models.registry import HeadConfig, vit_names


@dataclass(frozen=True)
class LossConfig:
    """DINO's loss settings as DoRA runs them; the teacher temperature warms up per epoch as in DINOLoss."""

    teacher_temp: float = field(default=0.04, metadata={"help": "Teacher softmax temperature after its warm-up."})
    warmup_teacher_temp: float = field(default=0.04, metadata={"help": "Teacher temperature at epoch 0."})
    warmup_teacher_temp_epochs: int = field(default=0, metadata={
        "help": "Epochs of linear teacher-temperature warm-up (DINO: 30 when teacher_temp > 0.04)."})
    student_temp: float = field(default=0.1, metadata={"help": "Student log-softmax temperature."})
    center_momentum: float = field(default=0.9, metadata={"help": "EMA momentum of the teacher centre."})
    weighting: str = field(default="authors", metadata={
        "choices": ("authors", "mean"), "help": "The authors' accumulation across objects, or the plain mean."})

    def __post_init__(self) -> None:
        if self.weighting not in ("authors", "mean"):
            raise UsageError(f"weighting {self.weighting!r}", "use 'authors' (default) or 'mean'")
        if min(self.teacher_temp, self.warmup_teacher_temp, self.student_temp) <= 0:
            raise UsageError("temperatures must be positive", "check teacher_temp, warmup_teacher_temp, student_temp")
        if self.warmup_teacher_temp_epochs < 0:
            raise UsageError("warmup_teacher_temp_epochs must be >= 0", "")


@dataclass(frozen=True)
class SinkhornConfig:
    """Sinkhorn-Knopp in the object discovery (SwAV's settings, as the authors use them)."""

    sinkhorn_epsilon: float = field(default=0.05, metadata={"help": "Sinkhorn-Knopp entropy (logits / epsilon)."})
    sinkhorn_iterations: int = field(default=30, metadata={"help": "Sinkhorn-Knopp normalisation rounds."})


@dataclass(frozen=True)
class DoRAConfig:
    arch: str = field(default="vit_small", metadata={"choices": vit_names, "help": "Backbone."})
    out_dim: int = field(default=65536, metadata={"help": "Prototypes: the head's output dimension."})
    n_local: int = field(default=6, metadata={"help": "Local views per clip."})
    objects: int = field(default=3, metadata={"help": "Objects K tracked per clip (<= attention heads)."})
    drop_path: float = field(default=0.1, metadata={"help": "Stochastic depth of the student backbone."})
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sinkhorn: SinkhornConfig = field(default_factory=SinkhornConfig)

    def __post_init__(self) -> None:
        if self.out_dim < 1 or self.n_local < 0 or self.objects < 1:
            raise UsageError(f"out_dim {self.out_dim}, n_local {self.n_local}, objects {self.objects}",
                              "out_dim and objects must be >= 1, n_local >= 0")


def teacher_temperature(config: LossConfig, epoch: int) -> float:
    """DINOLoss's `teacher_temp_schedule[epoch]`: linspace(warmup, teacher, W) for the first W
    epochs (reaching teacher_temp at epoch W-1), then teacher_temp."""
    import numpy as np  # np.linspace itself, so the values are DINO's to the last bit

    w = config.warmup_teacher_temp_epochs
    if epoch >= w:
        return config.teacher_temp
    return float(np.linspace(config.warmup_teacher_temp, config.teacher_temp, w)[epoch])
