"""DoRA's object discovery and tracking (docs/dora-method.md, "One training step"). On frame 0, K attention
heads' [CLS] rows weight the patch queries into prototypes, which Sinkhorn-Knopp assigns to the normalised
patch tokens; the refined prototypes then attend over each frame's patch keys, and each attention map,
binarised at its batch mean, masks the frame."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def sinkhorn(logits: torch.Tensor, epsilon: float = 0.05, iterations: int = 30) -> torch.Tensor:
    """(B, N, K) similarities -> (B, N, K) transport plan whose rows (patches) each sum to 1."""
    b, n, k = logits.shape
    scores = logits.float() / epsilon
    scores = scores.masked_fill(~torch.isfinite(scores), float("-inf"))  # non-finite entries get no mass
    scores = scores - scores.amax(dim=(1, 2), keepdim=True)  # max per sample over all N*K entries
    plan = torch.nan_to_num(torch.exp(scores), nan=0.0).transpose(1, 2)  # (B, K, N)
    plan = plan / plan.sum(dim=(1, 2), keepdim=True).clamp(min=1e-30)
    for _ in range(iterations):
        plan = plan / plan.sum(dim=2, keepdim=True).clamp(min=1e-30) / k  # each prototype's row sums to 1/K
        plan = plan / plan.sum(dim=1, keepdim=True).clamp(min=1e-30) / n  # each patch's column sums to 1/N
    return (plan * n).transpose(1, 2)  # (B, N, K)


@torch.no_grad()
def discover(cls_row: torch.Tensor, queries: torch.Tensor, tokens: torch.Tensor, heads: torch.Tensor,
             epsilon: float = 0.05, iterations: int = 30) -> torch.Tensor:
    """Refined object prototypes P' (B, K, D) from frame 0: cls_row (B, h, N) [CLS]-to-patch attention,
    queries (B, N, D) patch queries (heads concatenated), tokens (B, N, D) final-norm patch tokens, heads (K,)."""
    prototypes = cls_row[:, heads] @ queries  # (B, K, D)
    normed = F.normalize(tokens, dim=-1)  # (B, N, D)
    plan = sinkhorn(normed @ prototypes.transpose(1, 2), epsilon, iterations)  # (B, N, K)
    return plan.transpose(1, 2) @ normed  # (B, K, D)


@torch.no_grad()
def track(prototypes: torch.Tensor, keys: torch.Tensor, frames: int) -> torch.Tensor:
    """Binary patch masks (K, B, T, N) for every object and frame from prototypes (B, K, D) and patch keys
    (B*T, N, D; heads concatenated, clip-major); the threshold is one mean per (object, frame) over the batch."""
    bt, n, d = keys.shape
    b, k, _ = prototypes.shape
    keys = keys.reshape(b, frames, n, d)
    logits = torch.einsum("bkd,btnd->kbtn", prototypes, keys) / d ** 0.5
    attention = F.normalize(torch.softmax(logits.float(), dim=-1), dim=-1)  # (K, B, T, N), L2 per sample
    threshold = attention.mean(dim=(1, 3), keepdim=True)  # (K, 1, T, 1): over B*N values (authors' choice)
    return attention > threshold


@torch.no_grad()
def apply_masks(frames: torch.Tensor, masks: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Keep each object's region of the normalised global frames (B, T, 3, H, W), zero the rest:
    masks (K, B, T, N) with N = (H/p)*(W/p) -> (K, B, T, 3, H, W)."""
    k, b, t, n = masks.shape
    h, w = frames.shape[-2] // patch_size, frames.shape[-1] // patch_size
    grid = masks.reshape(k, b, t, 1, h, w).to(frames.dtype)
    pixels = grid.repeat_interleave(patch_size, dim=-2).repeat_interleave(patch_size, dim=-1)  # nearest upsample
    return frames.unsqueeze(0) * pixels
