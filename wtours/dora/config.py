"""The DoRA model's settings, declared once with the authors' defaults (docs/dora.md), no torch import:
`DoRA(config)` is built from a `DoRAConfig`, `wtours train` derives its options from these fields
(wtours/config.py) and a run folder's config.json records them."""

from __future__ import annotations

from dataclasses import dataclass, field

from wtours.config import FRACTION, Checked, Range, option
from wtours.models.registry import HeadConfig, vit_names

# DINO's temperatures are 0.04-0.1 (sharpening); past 10 the unit-scale logits give a flat softmax, a constant loss
TEMPERATURE = Range(0, 10, open_low=True)

@dataclass(frozen=True)
class LossConfig(Checked):
    """DINO's loss settings as DoRA runs them; the teacher temperature warms up per epoch as in DINOLoss."""

    teacher_temp: float = option(0.04, "Teacher softmax temperature after its warm-up.", range=TEMPERATURE)
    warmup_teacher_temp: float = option(0.04, "Teacher temperature at epoch 0.", range=TEMPERATURE)
    warmup_teacher_temp_epochs: int = option(0, "Epochs of linear teacher-temperature warm-up (DINO: 30 when "
                                                "teacher_temp > 0.04).", range=Range(0, 100_000))
    student_temp: float = option(0.1, "Student log-softmax temperature.", range=TEMPERATURE)
    center_momentum: float = option(0.9, "EMA momentum of the teacher centre.", range=FRACTION)
    weighting: str = option("authors", "The authors' accumulation across objects, or the plain mean.",
                            choices=("authors", "mean"))


@dataclass(frozen=True)
class SinkhornConfig(Checked):
    """Sinkhorn-Knopp in the object discovery (SwAV's settings, as the authors use them)."""

    sinkhorn_epsilon: float = option(0.05, "Sinkhorn-Knopp entropy (logits / epsilon).", range=TEMPERATURE)
    sinkhorn_iterations: int = option(30, "Sinkhorn-Knopp normalisation rounds.", range=Range(1, 10_000))


@dataclass(frozen=True)
class DoRAConfig(Checked):
    arch: str = option("vit_small", "Backbone.", choices=vit_names)
    # out_dim: DINO runs 65536 prototypes; 2^20 is far past any published run (its head alone is 256 x 2^20).
    out_dim: int = option(65536, "Prototypes: the head's output dimension.", range=Range(1, 1 << 20))
    n_local: int = option(6, "Local views per clip.", range=Range(0, 64))
    objects: int = option(3, "Objects K tracked per clip (<= attention heads).", range=Range(1, 64))
    drop_path: float = option(0.1, "Stochastic depth of the student backbone.", range=Range(0, 1, open_high=True))
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sinkhorn: SinkhornConfig = field(default_factory=SinkhornConfig)


def teacher_temperature(config: LossConfig, epoch: int) -> float:
    """DINOLoss's `teacher_temp_schedule[epoch]`: linspace(warmup, teacher, W) for the first W
    epochs (reaching teacher_temp at epoch W-1), then teacher_temp."""
    import numpy as np  # np.linspace itself, so the values are DINO's to the last bit

    w = config.warmup_teacher_temp_epochs
    if epoch >= w:
        return config.teacher_temp
    return float(np.linspace(config.warmup_teacher_temp, config.teacher_temp, w)[epoch])
