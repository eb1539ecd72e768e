"""Checkpoint files, read and written in one place: wtours' training checkpoints (the authors' layout,
'student', 'teacher', 'dora_loss', plus our run state), the authors' and DINO's, and exported backbones.
Every reader goes through `read_checkpoint` (torch.load with weights_only=True: a checkpoint is data, never
code). `load_backbone` takes a frozen backbone from any of them; its architecture is the registered one with
the weights' shapes (width, patch size, depth) unless `arch` names it."""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from wtours import __version__
from wtours.errors import UsageError, WtoursError
from wtours.layout import EXPORT_WEIGHTS_FILE, replace_atomically
from wtours.models.registry import vit_config, vit_names
from wtours.models.vit import VisionTransformer, create_vit

log = logging.getLogger(__name__)

NETWORKS = ("student", "teacher")


def read_checkpoint(path: str | os.PathLike, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint file's contents, unchecked (`read_weights` checks them). `mmap` maps the tensors
    instead of reading them: for a look at a large checkpoint's run state. A folder is read as an export
    (`wtours export --format timm`: its model.safetensors), as is a .safetensors file."""
    if Path(path).is_dir() or str(path).endswith(".safetensors"):
        return _read_safetensors(Path(path) / EXPORT_WEIGHTS_FILE if Path(path).is_dir() else Path(path))
    torch.serialization.add_safe_globals([argparse.Namespace])  # the authors' checkpoints carry their args
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError as e:
        raise WtoursError(f"checkpoint {path} not found", "check the path") from e
    except Exception as e:  # noqa: BLE001 (torch raises many types for a bad file)
        raise WtoursError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})",
                          "pass a .pth file written by torch.save") from e


def _read_safetensors(path: Path) -> dict[str, Any]:
    """An exported backbone's weights (timm's names, which are this ViT's)."""
    try:
        from safetensors.torch import load_file
    except ImportError as e:
        raise WtoursError(f"{path}: reading safetensors needs the safetensors package",
                          "pip install safetensors") from e
    if not path.is_file():
        raise WtoursError(f"{path} not found", f"pass a checkpoint file, or a `wtours export --format timm` folder "
                                               f"(it holds {EXPORT_WEIGHTS_FILE})")
    try:
        return load_file(path)
    except Exception as e:  # noqa: BLE001 (safetensors raises its own error types for a damaged file)
        raise WtoursError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})",
                          "export the checkpoint again (`wtours export --format timm`)") from e


class _KeepingErrors(io.BufferedWriter):
    """A file whose write errors are kept: torch.save turns an exception raised by a write (a full disk's OSError,
    a Ctrl-C's KeyboardInterrupt) into a bare RuntimeError ("unexpected pos ..."); the kept one is raised instead."""

    error: BaseException | None = None

    def write(self, data) -> int:
        try:
            return super().write(data)
        except BaseException as error:
            self.error = error
            raise


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """A training checkpoint: `state` and the wtours version, through `save_file`."""
    save_file(path, {**state, "wtours": __version__})


def save_file(path: Path, data: Any) -> None:
    """torch.save through the one atomic writer: a kill never leaves half a file, and a failed write
    (ENOSPC, EROFS, ...) raises its OSError, leaves no temporary and keeps the previous file."""
    def write(tmp: Path) -> None:
        with _KeepingErrors(open(tmp, "wb", buffering=0)) as file:
            try:
                torch.save(data, file)
            except RuntimeError:
                if file.error is not None:
                    raise file.error from None
                raise

    replace_atomically(path, write)


_WRAPPERS = re.compile(r"^(?:module\.|_orig_mod\.)+")


def strip_prefix(state: dict[str, torch.Tensor]) -> dict:
    """Keys without DDP's `module.` and torch.compile's `_orig_mod.` prefixes (in any nesting)."""
    return {_WRAPPERS.sub("", key): value for key, value in state.items()}


def backbone_state(checkpoint: dict, which: str = "teacher") -> dict[str, torch.Tensor]:
    """The backbone of a training checkpoint (ours or the authors'), or an exported backbone as it is."""
    if which in checkpoint:
        state = strip_prefix(checkpoint[which])
        return {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    state = strip_prefix(checkpoint)
    if "pos_embed" in state and "cls_token" in state:
        if which == "student":  # a bare backbone has no networks to choose from: its weights are not a student's
            raise UsageError("--which student: this checkpoint is a bare backbone (no 'student' entry)",
                              "leave --which out: a bare backbone is exported as it is")
        return state  # already a bare backbone
    raise WtoursError(f"no {which!r} entry and no backbone weights in this checkpoint",
                      "pass a wtours/DoRA/DINO training checkpoint or an exported backbone")

_BLOCK = re.compile(r"blocks\.(\d+)\.")


def infer_arch(state: dict[str, torch.Tensor]) -> str:
    """The registered architecture whose (width, patch size, depth) the backbone weights have."""
    try:
        width = int(state["pos_embed"].shape[-1])
        patch = int(state["patch_embed.proj.weight"].shape[-1])
    except KeyError as e:
        raise WtoursError(f"the backbone weights have no {e.args[0]!r}",
                          "pass a DINO/DoRA/wtours ViT checkpoint or an exported backbone") from e
    depth = 1 + max((int(m.group(1)) for key in state if (m := _BLOCK.match(key))), default=-1)
    for name in vit_names():
        if "_patch" not in name:
            continue  # vit_small is an alias of vit_small_patch16
        config = vit_config(name)  # the config alone: building every model would cost seconds
        if (config.dim, config.patch_size, config.depth) == (width, patch, depth):
            return name.replace("_patch16", "")
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
    for name in NETWORKS:
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
