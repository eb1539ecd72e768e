"""`wtours export`: a checkpoint's backbone as a plain state dict that timm's ViT of the same size loads."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from wtours.dora.model import read_checkpoint, strip_prefix
from wtours.errors import WtoursError
from wtours.layout import replace_atomically


def backbone_state(checkpoint: dict, which: str = "teacher") -> dict[str, torch.Tensor]:
    """The backbone of a training checkpoint (ours or the authors'), or an exported backbone as it is."""
    if which in checkpoint:
        state = strip_prefix(checkpoint[which])
        return {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    state = strip_prefix(checkpoint)
    if "pos_embed" in state and "cls_token" in state:
        return state  # already a bare backbone
    raise WtoursError(f"no {which!r} entry and no backbone weights in this checkpoint",
                      "pass a wtours/DoRA/DINO training checkpoint or an exported backbone")


def export_backbone(checkpoint_path: str | os.PathLike, out: str | os.PathLike, which: str = "teacher") -> Path:
    state = backbone_state(read_checkpoint(checkpoint_path), which)
    out = Path(out)
    replace_atomically(out, lambda tmp: torch.save({k: v.contiguous() for k, v in state.items()}, tmp))
    return out
