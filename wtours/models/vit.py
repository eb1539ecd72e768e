"""Vision Transformer as in DINO's vision_transformer.py: same parameter names, so DINO/DoRA checkpoints
load as they are and exported backbones load into timm's `vit_*_patch*_224`. Attention is fused
(scaled_dot_product_attention); `forward_last_attention` also returns the last block's per-head queries
and keys, which DoRA's tracker needs."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from wtours.models.registry import ViTConfig, vit_config


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads  # the 1/sqrt(d) scale is scaled_dot_product_attention's default
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, n, D) -> the output (B, n, D), and the per-head queries and keys (B, h, n, D/h)."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, n, D/h)
        return self.proj(out.transpose(1, 2).reshape(x.shape)), q, k


class DropPath(nn.Module):
    """Stochastic depth per sample (drops the residual branch)."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict(fc1=nn.Linear(dim, hidden), act=nn.GELU(), fc2=nn.Linear(hidden, dim)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The block's output, and its attention's per-head queries and keys."""
        attended, q, k = self.attn(self.norm1(x))
        x = x + self.drop_path(attended)
        return x + self.drop_path(self.mlp(self.norm2(x))), q, k


@dataclass
class LastAttention:
    """What the teacher's last block exposes for DoRA's tracker."""

    tokens: torch.Tensor  # (B, 1+N, D) final-norm tokens
    queries: torch.Tensor  # (B, h, 1+N, D/h) of the last block
    keys: torch.Tensor  # (B, h, 1+N, D/h) of the last block


class VisionTransformer(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        d = config.dim
        p = config.patch_size
        self.patch_embed = nn.Sequential(OrderedDict(proj=nn.Conv2d(3, d, kernel_size=p, stride=p)))  # DINO's names
        grid = config.image_size // p
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, d))
        rates = torch.linspace(0, config.drop_path, config.depth).tolist()
        self.blocks = nn.ModuleList(Block(d, config.heads, config.mlp_ratio, r) for r in rates)
        self.norm = nn.LayerNorm(d, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_linear)

    def interpolate_pos_encoding(self, height: int, width: int) -> torch.Tensor:
        """DINO's interpolation (bicubic, with its +0.1 scale offset) for inputs other than image_size."""
        n = self.pos_embed.shape[1] - 1
        h0, w0 = height // self.config.patch_size, width // self.config.patch_size
        if h0 * w0 == n and h0 == w0:
            return self.pos_embed
        side = int(math.sqrt(n))
        cls, patches = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((h0 + 0.1) / side, (w0 + 0.1) / side), mode="bicubic")
        return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, -1, grid.shape[1])], dim=1)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1+N, D) embedded tokens with position."""
        b, _, h, w = x.shape
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        return x + self.interpolate_pos_encoding(h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_last_attention(x).tokens[:, 0]  # [CLS] (B, D)

    def intermediate_layers(self, x: torch.Tensor, n: int = 1) -> list[torch.Tensor]:
        """The final-norm tokens (B, 1+N, D) of each of the last `n` blocks, first to last: DINO's
        `get_intermediate_layers` (facebookresearch/dino, vision_transformer.py), the linear probe's input."""
        x, out = self.tokens(x), []
        for i, block in enumerate(self.blocks):
            x = block(x)[0]
            if i >= len(self.blocks) - n:
                out.append(self.norm(x))
        return out

    def forward_last_attention(self, x: torch.Tensor) -> LastAttention:
        """The final-norm tokens, and the last block's per-head queries and keys."""
        x = self.tokens(x)
        for block in self.blocks:
            x, q, k = block(x)
        return LastAttention(self.norm(x), q, k)


def cls_attention(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The [CLS] row of attention probabilities: (B, h, 1+N, d) x2 -> (B, h, 1+N)."""
    scale = queries.shape[-1] ** -0.5
    return torch.softmax((queries[:, :, :1] @ keys.transpose(-2, -1)).squeeze(2) * scale, dim=-1)


def init_linear(module: nn.Module) -> None:
    """DINO's init of a linear layer (LayerNorm's own init is already DINO's: weight 1, bias 0)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


def create_vit(arch: str, drop_path: float = 0.0) -> VisionTransformer:
    return VisionTransformer(vit_config(arch, drop_path))
