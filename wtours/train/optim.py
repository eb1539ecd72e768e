"""Optimisation pieces: schedules, AdamW groups, per-tensor clipping, last-layer freeze, EMA teacher. The
tensor ones work on whole parameter lists with torch._foreach ops: no host sync per parameter."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


def cosine_schedule(base: float, final: float, total_steps: int, warmup_steps: int = 0) -> np.ndarray:
    """DINO's utils.cosine_scheduler per iteration: np.linspace(0, base, warmup_steps) (reaching `base` at the
    last warm-up iteration), then a cosine from `base` to `final` over the remaining iterations. A warm-up
    longer than the run (a short --steps run) is shortened to the run: it then reaches `base` at the last step."""
    warmup_steps = min(warmup_steps, total_steps)
    warmup = np.linspace(0.0, base, warmup_steps)  # empty without a warm-up
    iters = np.arange(total_steps - warmup_steps)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / max(len(iters), 1)))
    return np.concatenate((warmup, cosine))


def param_groups(module: nn.Module) -> list[dict]:
    """Weight decay on matrices only: biases and 1-D parameters (norms, tokens' gains) get none."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in module.named_parameters():
        if param.requires_grad:
            (no_decay if name.endswith(".bias") or param.ndim <= 1 else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def clip_per_tensor(params: list[torch.Tensor], max_norm: float) -> None:
    """The authors' clipping: each parameter's gradient norm capped at max_norm on its own. Scaling by
    min(1, max/(norm+1e-6)) everywhere equals DINO's `if clip_coef < 1: grad *= clip_coef` without reading
    any norm on the host."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch.stack(torch._foreach_norm(grads))  # (P,)
    scales = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, list(scales.unbind()))


def cancel_last_layer_gradients(student: nn.Module, epoch: int, freeze_epochs: int) -> None:
    if epoch >= freeze_epochs:
        return
    for name, param in student.named_parameters():
        if "last_layer" in name:
            param.grad = None


@torch.no_grad()
def ema_update(teacher: list[torch.Tensor], student: list[torch.Tensor], momentum: float) -> None:
    """teacher = m * teacher + (1 - m) * student, on whole lists."""
    torch._foreach_mul_(teacher, momentum)
    torch._foreach_add_(teacher, student, alpha=1 - momentum)
