"""The DoRA model: student and teacher (DINO-named `.backbone` + `.head`), tracker, loss, checkpoint loading."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn as nn

from wtours.dora.config import DoRAConfig
from wtours.dora.loss import DoRALoss
from wtours.dora.tracker import apply_masks, discover, track
from wtours.errors import WtoursError
from wtours.models.checkpoint import NETWORKS, read_weights, strip_prefix
from wtours.models.head import DINOHead
from wtours.models.vit import VisionTransformer, cls_attention, create_vit


class Encoder(nn.Module):
    """Backbone + head, named as DINO's MultiCropWrapper so checkpoints load without conversion. Given a list
    of batches (one per resolution) it runs the backbone on each and the head once on all [CLS] features, in
    ONE forward call: DistributedDataParallel needs exactly that."""

    backbone: VisionTransformer  # declared: nn.Module's __getattr__ would type sub-modules as Tensor | Module
    head: DINOHead

    def __init__(self, backbone: VisionTransformer, head: DINOHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        features = torch.cat([self.backbone(batch) for batch in x])  # (sum of batches, D)
        return list(self.head(features).split([len(batch) for batch in x]))


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar
    teacher: torch.Tensor  # (T, B, out) g_t, for the centre update
    masks: torch.Tensor  # (K, B, T, N) bool


class DoRA(nn.Module):
    """`DoRA(DoRAConfig(...))`, or `DoRA("vit_micro", out_dim=64)` (an arch and field overrides of the
    defaults). `compute_loss(crops)` runs on CPU without a process group."""

    def __init__(self, config: DoRAConfig | str = DoRAConfig(), **overrides: Any):
        super().__init__()
        config = DoRAConfig(arch=config) if isinstance(config, str) else config
        self.config = config = replace(config, **overrides)
        self.arch, self.n_local, self.objects = config.arch, config.n_local, config.objects
        student = create_vit(config.arch, config.drop_path)
        dim = student.config.dim
        self.student = Encoder(student, DINOHead(dim, config.out_dim, config.head))
        self.teacher = Encoder(create_vit(config.arch, 0.0), DINOHead(dim, config.out_dim, config.head))
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.loss = DoRALoss(config.out_dim, config.loss)
        if config.objects > student.config.heads:
            raise WtoursError(f"{config.objects} objects need as many attention heads; {config.arch} has "
                              f"{student.config.heads}", "use fewer objects or a wider architecture")

    @property
    def patch_size(self) -> int:
        return self.student.backbone.config.patch_size

    def draw_heads(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """K distinct heads at random: one draw per step, shared by the batch."""
        return torch.randperm(self.teacher.backbone.config.heads, generator=generator)[: self.objects]

    @torch.no_grad()
    def teacher_pass(self, global_view: torch.Tensor,
                     heads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """global_view (B, T, 3, H, W) -> g (T, B, out), masked clips (K, B, T, 3, H, W), masks (K, B, T, N)."""
        b, t = global_view.shape[:2]
        frames = global_view.flatten(0, 1)  # (B*T, 3, H, W), clip-major
        last = self.teacher.backbone.forward_last_attention(frames)
        g = self.teacher.head(last.tokens[:, 0]).reshape(b, t, -1).transpose(0, 1)  # (T, B, out)
        _, h, tokens, hd = last.queries.shape
        q0 = last.queries.reshape(b, t, h, tokens, hd)[:, 0]  # (B, h, 1+N, d) frame 0
        k0 = last.keys.reshape(b, t, h, tokens, hd)[:, 0]
        cls_row = cls_attention(q0, k0)[:, :, 1:]  # (B, h, N)
        queries = q0[:, :, 1:].transpose(1, 2).reshape(b, tokens - 1, h * hd)  # (B, N, D) heads concatenated
        patch_tokens = last.tokens.reshape(b, t, tokens, -1)[:, 0, 1:]  # (B, N, D)
        prototypes = discover(cls_row, queries, patch_tokens, heads.to(cls_row.device),
                              self.config.sinkhorn.sinkhorn_epsilon,
                              self.config.sinkhorn.sinkhorn_iterations)  # (B, K, D)
        keys = last.keys[:, :, 1:].transpose(1, 2).reshape(b * t, tokens - 1, h * hd)  # (B*T, N, D)
        masks = track(prototypes.float(), keys.float(), t)  # (K, B, T, N)
        return g, apply_masks(global_view, masks, self.patch_size), masks

    def forward(self, crops: list[torch.Tensor], heads: torch.Tensor | None = None,
                student: nn.Module | None = None, epoch: int = 0) -> StepOutput:
        """crops: [global (B, T, 3, 224, 224), local_1 .. local_n (B, T, 3, 112, 112)]. `student` may be a
        DistributedDataParallel wrapper of `self.student`; `epoch` sets the teacher temperature (its warm-up
        is per epoch, as in DINO)."""
        global_view, locals_ = crops[0], crops[1:]
        if len(locals_) != self.n_local:
            raise WtoursError(f"got {len(locals_)} local views, the model was built for {self.n_local}",
                              "make the loader's n_local match --n-local")
        heads = self.draw_heads() if heads is None else torch.as_tensor(heads)
        g, masked, masks = self.teacher_pass(global_view, heads)
        k, b, t = masked.shape[:3]
        stacked = torch.stack(locals_).flatten(0, 2)  # (n*B*T, 3, L, L)
        s, l_out = (student or self.student)([masked.flatten(0, 2), stacked])
        s = s.reshape(k, b, t, -1).transpose(1, 2)  # (K, T, B, out)
        l_out = l_out.reshape(self.n_local, b, t, -1).transpose(1, 2)  # (n, T, B, out)
        return StepOutput(self.loss(g, s, l_out, epoch), g, masks)

    def compute_loss(self, crops: list[torch.Tensor], epoch: int = 0,
                     heads: torch.Tensor | None = None) -> torch.Tensor:
        """The scalar loss for a batch at `epoch` (the centre is not updated)."""
        return self.forward(crops, heads, epoch=epoch).loss

    def load_official_checkpoint(self, checkpoint: str | os.PathLike | dict[str, Any]) -> None:
        """Load the authors' (or DINO's, or our) checkpoint: a dict with 'student' and 'teacher'."""
        state = read_weights(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
        for name in NETWORKS:
            if name not in state:
                raise WtoursError(f"checkpoint has no {name!r} entry (keys: {', '.join(list(state)[:8])})",
                                  "pass a DoRA/DINO training checkpoint (with 'student' and 'teacher' dicts)")
            weights, own = strip_prefix(state[name]), getattr(self, name).state_dict()
            missing = sorted(own.keys() - weights.keys())
            unexpected = sorted(weights.keys() - own.keys())
            wrong = sorted(k for k in own.keys() & weights.keys() if own[k].shape != weights[k].shape)
            if missing or unexpected or wrong:
                detail = "; ".join(f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                                   for label, keys in (("missing", missing), ("unexpected", unexpected),
                                                       ("shape differs", wrong)) if keys)
                raise WtoursError(f"the checkpoint's {name} does not fit this model ({detail})",
                                  "build the model with the checkpoint's --arch and --out-dim")
            getattr(self, name).load_state_dict(weights)
        loss: dict = next((state[k] for k in ("dora_loss", "dino_loss") if isinstance(state.get(k), dict)), {})
        center = loss.get("center")
        if isinstance(center, torch.Tensor) and center.shape == self.loss.center.shape:
            self.loss.center.copy_(center)
