"""A frozen ViT backbone from any checkpoint we accept: ours, the authors' (DINO layout), or an exported one.

The architecture is read from the weights' shapes (width, patch size, depth) and matched against the
model registry; `arch` overrides it."""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import torch

from wtours.dora.model import read_checkpoint
from wtours.errors import UsageError, WtoursError
from wtours.models.registry import vit_config, vit_names
from wtours.models.vit import VisionTransformer, create_vit
from wtours.train.export import backbone_state

log = logging.getLogger(__name__)

_BLOCK = re.compile(r"blocks\.(\d+)\.")


def shape_signature(state: dict[str, torch.Tensor]) -> tuple[int, int, int]:
    """(width, patch size, depth) of a backbone state dict."""
    try:
        width = state["pos_embed"].shape[-1]
        patch = state["patch_embed.proj.weight"].shape[-1]
    except KeyError as e:
        raise WtoursError(f"the backbone weights have no {e.args[0]!r}",
                          "pass a DINO/DoRA/wtours ViT checkpoint or an exported backbone") from e
    depth = 1 + max((int(m.group(1)) for key in state if (m := _BLOCK.match(key))), default=-1)
    return int(width), int(patch), depth


def infer_arch(state: dict[str, torch.Tensor]) -> str:
    """The registered architecture whose (width, patch size, depth) the weights have."""
    signature = shape_signature(state)
    for name in vit_names():
        if "_patch" not in name:
            continue  # vit_small is an alias of vit_small_patch16
        config = vit_config(name)  # the config alone: building every model would cost seconds
        if (config.dim, config.patch_size, config.depth) == signature:
            return name.replace("_patch16", "")
    width, patch, depth = signature
    raise UsageError(f"no registered architecture has width {width}, patch size {patch} and {depth} blocks",
                      f"pass --arch (one of {', '.join(vit_names())})")


CHECKPOINT_HINT = "pass a wtours/DoRA/DINO training checkpoint or a `wtours export` backbone (.pth)"


def read_weights(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint file that holds what a checkpoint holds: a dict, whose networks (`student`,
    `teacher`) are dicts and whose weights are tensors. Anything else (a pickled list, a dict of
    strings) is refused with the file's name, before any key is looked up."""
    raw = read_checkpoint(path)
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise WtoursError(f"{path} holds a {type(raw).__name__}, not a checkpoint (a dict of networks or weights)",
                          CHECKPOINT_HINT)
    for name in ("student", "teacher"):
        if name in raw and not (isinstance(raw[name], dict)
                                and all(isinstance(v, torch.Tensor) for v in raw[name].values())):
            raise WtoursError(f"{path}: its {name!r} entry is a {type(raw[name]).__name__}, not a dict of weights",
                              CHECKPOINT_HINT)
    if "student" not in raw and "teacher" not in raw and not all(isinstance(v, torch.Tensor) for v in raw.values()):
        odd = next(k for k, v in raw.items() if not isinstance(v, torch.Tensor))
        raise WtoursError(f"{path} is neither a training checkpoint (no 'student'/'teacher') nor a backbone "
                          f"({odd!r} is a {type(raw[odd]).__name__}, not a tensor)", CHECKPOINT_HINT)
    return raw


def load_backbone(checkpoint: str | os.PathLike | dict[str, Any], arch: str | None = None,
                  which: str = "teacher") -> tuple[VisionTransformer, str]:
    """(backbone in eval mode with frozen weights, its architecture name)."""
    raw = checkpoint if isinstance(checkpoint, dict) else read_weights(checkpoint)
    state = backbone_state(raw, which)
    arch = arch or infer_arch(state)
    backbone = create_vit(arch)
    own = backbone.state_dict()
    missing = sorted(own.keys() - state.keys())
    wrong = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or wrong:
        detail = ", ".join((missing + wrong)[:4])
        raise UsageError(f"the checkpoint's {which} backbone does not fit {arch} (missing or reshaped: {detail})",
                          "leave out --arch to infer it from the weights, or pass the right one")
    unexpected = sorted(state.keys() - own.keys())
    if unexpected:  # e.g. a classifier head on a fine-tuned backbone: ignored, as DINO's eval does
        log.warning("ignoring %d weights the backbone does not use: %s", len(unexpected), ", ".join(unexpected[:4]))
    backbone.load_state_dict({k: state[k] for k in own})
    return backbone.eval().requires_grad_(False), arch
