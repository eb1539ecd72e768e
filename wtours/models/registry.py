"""The ViT registry: named configurations (no torch import, so the CLI can list them cheaply)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from wtours.config import Checked, Range, option
from wtours.errors import WtoursError

# The input normalisation every registered encoder is trained and evaluated with (ImageNet's RGB statistics,
# as DINO and DoRA use them); the loader applies it and exported models declare it.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViTConfig:
    patch_size: int = 16
    dim: int = 384
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    image_size: int = 224  # the size the position embedding is learned at
    drop_path: float = 0.0


@dataclass(frozen=True)
class HeadConfig(Checked):
    """DINO's projection head (wtours/models/head.py); its output dimension is the model's out_dim."""

    hidden_dim: int = option(2048, "Width of the head's two hidden layers.", range=Range(1, 1 << 16))
    bottleneck_dim: int = option(256, "Width before the weight-normalised last layer.", range=Range(1, 1 << 16))
    norm_last_layer: bool = option(False, "Fix the last layer's weight-norm gain to 1 (the authors ran ViT-S without).")


# (width, depth, heads) by name; vit_micro is for tests and the CPU demo (no timm counterpart)
_SIZES = {"vit_micro": (96, 4, 3), "vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6), "vit_base": (768, 12, 12)}
_ARCHS = {f"{name}{suffix}": ViTConfig(patch, *size) for name, size in _SIZES.items()
          for suffix, patch in (("", 16), ("_patch16", 16), ("_patch8", 8))}


def vit_names() -> list[str]:
    return sorted(_ARCHS)


def vit_config(arch: str, drop_path: float = 0.0) -> ViTConfig:
    if arch not in _ARCHS:
        raise WtoursError(f"unknown architecture {arch!r}", f"choose one of {', '.join(vit_names())}")
    return replace(_ARCHS[arch], drop_path=drop_path)
