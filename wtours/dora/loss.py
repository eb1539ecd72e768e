"""DoRA's loss: DINO cross-entropy between teacher [CLS] outputs and student views, with the centre."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from wtours.dora.config import LossConfig, teacher_temperature


class DoRALoss(nn.Module):
    """Owns the centre buffer. `weighting="authors"` reproduces the authors' accumulation across
    objects (acc += sum_t term; acc /= T; total += acc, without resetting acc); `"mean"` is the
    plain mean over objects and frames. The teacher temperature of `epoch` follows DINOLoss's schedule."""

    center: torch.Tensor  # (1, out) buffer, declared for the type checker

    def __init__(self, out_dim: int, config: LossConfig = LossConfig()):
        super().__init__()
        self.config = config
        self.register_buffer("center", torch.zeros(1, out_dim))

    def cross_entropy(self, targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """H(q, x) per frame: targets (T, B, out), logits (..., T, B, out) -> (..., T), mean over B."""
        log_probs = F.log_softmax(logits.float() / self.config.student_temp, dim=-1)
        return -(targets * log_probs).sum(dim=-1).mean(dim=-1)

    def forward(self, teacher: torch.Tensor, masked: torch.Tensor, local: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        """teacher: (T, B, out) g_t; masked: (K, T, B, out) s^k_t; local: (n, T, B, out) l^v_t."""
        temp = teacher_temperature(self.config, epoch)
        targets = F.softmax((teacher.float() - self.center) / temp, dim=-1).detach()  # (T, B, out)
        mask_terms = self.cross_entropy(targets, masked)  # (K, T)
        local_terms = self.cross_entropy(targets, local[1:]).mean(dim=0)  # (T,): view 1 skipped as the authors do
        terms = 0.5 * (mask_terms + local_terms)  # (K, T)
        if self.config.weighting == "mean":
            return terms.mean()
        frames = terms.shape[1]
        accumulated = total = terms.new_zeros(())
        for per_object in terms.sum(dim=1):  # the authors' loop over objects, acc never reset
            accumulated = (accumulated + per_object) / frames
            total = total + accumulated
        return total / terms.shape[0]

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """c = m c + (1 - m) * mean of g_t over all T*B rows (and over processes when distributed)."""
        rows = teacher.reshape(-1, teacher.shape[-1]).float()
        batch_sum = rows.sum(dim=0, keepdim=True)
        count = torch.tensor([rows.shape[0]], device=rows.device, dtype=torch.float32)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            dist.all_reduce(count)
        m = self.config.center_momentum
        self.center.mul_(m).add_(batch_sum / count, alpha=1 - m)
