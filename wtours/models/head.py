"""DINO's projection head: MLP -> L2 normalisation -> weight-normalised linear layer (no bias). The weight
norm is written out (weight_g, weight_v parameters) so state-dict names match DINO's `last_layer.weight_g` /
`last_layer.weight_v` without torch's deprecated weight_norm hook."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from wtours.models.registry import HeadConfig
from wtours.models.vit import init_linear


class WeightNormLinear(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))  # gain fixed to 1 at init
        nn.init.trunc_normal_(self.weight_v, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)
        return F.linear(x, weight)


class DINOHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, config: HeadConfig = HeadConfig()):
        super().__init__()
        hidden, bottleneck = config.hidden_dim, config.bottleneck_dim
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.mlp.apply(init_linear)
        self.last_layer = WeightNormLinear(bottleneck, out_dim)
        self.last_layer.weight_g.requires_grad_(not config.norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)  # (B, bottleneck)
        return self.last_layer(x)  # (B, out)
