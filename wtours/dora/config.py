"""The DoRA model's settings, declared once: the authors' defaults (docs/dora.md), no torch import.

`DoRA(config)` is built from a `DoRAConfig`; `wtours train` derives its options from these fields
(wtours/config.py), and a run folder's config.json records them."""

from __future__ import annotations

from dataclasses import dataclass, field

from wtours.config import FRACTION, POSITIVE, Range, check_fields
from wtours.models.registry import HeadConfig, vit_names


@dataclass(frozen=True)
class LossConfig:
    """DINO's loss settings as DoRA runs them; the teacher temperature warms up per epoch as in DINOLoss."""

    teacher_temp: float = field(default=0.04, metadata={
        "help": "Teacher softmax temperature after its warm-up.", "range": POSITIVE})
    warmup_teacher_temp: float = field(default=0.04, metadata={
        "help": "Teacher temperature at epoch 0.", "range": POSITIVE})
    warmup_teacher_temp_epochs: int = field(default=0, metadata={
        "help": "Epochs of linear teacher-temperature warm-up (DINO: 30 when teacher_temp > 0.04).",
        "range": Range(0, 100_000)})
    student_temp: float = field(default=0.1, metadata={"help": "Student log-softmax temperature.", "range": POSITIVE})
    center_momentum: float = field(default=0.9, metadata={
        "help": "EMA momentum of the teacher centre.", "range": FRACTION})
    weighting: str = field(default="authors", metadata={
        "choices": ("authors", "mean"), "help": "The authors' accumulation across objects, or the plain mean."})

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class SinkhornConfig:
    """Sinkhorn-Knopp in the object discovery (SwAV's settings, as the authors use them)."""

    sinkhorn_epsilon: float = field(default=0.05, metadata={
        "help": "Sinkhorn-Knopp entropy (logits / epsilon).", "range": POSITIVE})
    sinkhorn_iterations: int = field(default=30, metadata={
        "help": "Sinkhorn-Knopp normalisation rounds.", "range": Range(1, 10_000)})

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class DoRAConfig:
    arch: str = field(default="vit_small", metadata={"choices": vit_names, "help": "Backbone."})
    # out_dim: DINO runs 65536 prototypes; 2^20 is far past any published run (its head alone is 256 x 2^20).
    out_dim: int = field(default=65536, metadata={
        "help": "Prototypes: the head's output dimension.", "range": Range(1, 1 << 20)})
    n_local: int = field(default=6, metadata={"help": "Local views per clip.", "range": Range(0, 64)})
    objects: int = field(default=3, metadata={
        "help": "Objects K tracked per clip (<= attention heads).", "range": Range(1, 64)})
    drop_path: float = field(default=0.1, metadata={
        "help": "Stochastic depth of the student backbone.", "range": Range(0, 1, open_high=True)})
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sinkhorn: SinkhornConfig = field(default_factory=SinkhornConfig)

    def __post_init__(self) -> None:
        check_fields(self)


def teacher_temperature(config: LossConfig, epoch: int) -> float:
    """DINOLoss's `teacher_temp_schedule[epoch]`: linspace(warmup, teacher, W) for the first W
    epochs (reaching teacher_temp at epoch W-1), then teacher_temp."""
    import numpy as np  # np.linspace itself, so the values are DINO's to the last bit

    w = config.warmup_teacher_temp_epochs
    if epoch >= w:
        return config.teacher_temp
    return float(np.linspace(config.warmup_teacher_temp, config.teacher_temp, w)[epoch])
