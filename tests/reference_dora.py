"""An independent, deliberately plain transcription of the authors' step (docs/dora-method.md):
explicit attention in every block, per-frame and per-object Python loops, per-sample Sinkhorn.
It reads the weights of a wtours DoRA model, so both compute on identical parameters."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def vit_forward(backbone, x, want_last=False):
    """DINO ViT with explicit attention probabilities; optionally the last block's attn, q, k."""
    cfg = backbone.config
    b, _, h, w = x.shape
    tokens = backbone.patch_embed.proj(x).flatten(2).transpose(1, 2)
    tokens = torch.cat([backbone.cls_token.expand(b, -1, -1), tokens], dim=1)
    tokens = tokens + backbone.interpolate_pos_encoding(h, w)
    last = None
    for i, block in enumerate(backbone.blocks):
        y = F.layer_norm(tokens, (cfg.dim,), block.norm1.weight, block.norm1.bias, eps=1e-6)
        qkv = F.linear(y, block.attn.qkv.weight, block.attn.qkv.bias)
        qkv = qkv.reshape(b, -1, 3, cfg.heads, cfg.dim // cfg.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * (cfg.dim // cfg.heads) ** -0.5
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, -1, cfg.dim)
        tokens = tokens + F.linear(out, block.attn.proj.weight, block.attn.proj.bias)
        y = F.layer_norm(tokens, (cfg.dim,), block.norm2.weight, block.norm2.bias, eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, block.mlp.fc1.weight, block.mlp.fc1.bias)),
                     block.mlp.fc2.weight, block.mlp.fc2.bias)
        tokens = tokens + y
        if i == len(backbone.blocks) - 1:
            last = (attn, q, k)
    tokens = F.layer_norm(tokens, (cfg.dim,), backbone.norm.weight, backbone.norm.bias, eps=1e-6)
    return (tokens, *last) if want_last else tokens[:, 0]


def head_forward(head, x):
    x = head.mlp(x)
    x = F.normalize(x, dim=-1, p=2)
    weight = head.last_layer.weight_g * head.last_layer.weight_v / head.last_layer.weight_v.norm(dim=1, keepdim=True)
    return F.linear(x, weight)


@torch.no_grad()
def sinkhorn_one(scores, eps=0.05, iters=30):
    """One sample: (N, K) -> (N, K), the authors' SwAV-style loop."""
    q = torch.exp(scores / eps - (scores / eps).max()).t()  # (K, N)
    k, n = q.shape
    q = q / q.sum()
    for _ in range(iters):
        q = q / q.sum(dim=1, keepdim=True)
        q = q / k
        q = q / q.sum(dim=0, keepdim=True)
        q = q / n
    q = q * n
    return q.t()


def reference_loss(model, crops, heads, center, weighting="authors", teacher_temp=0.04, student_temp=0.1):
    teacher, student = model.teacher, model.student
    glob, locals_ = crops[0], crops[1:]
    b, t = glob.shape[:2]
    d = teacher.backbone.config.dim
    patch = teacher.backbone.config.patch_size
    g, z, att, qs, ks = [], [], [], [], []
    with torch.no_grad():
        for f in range(t):  # the teacher, frame by frame
            tokens, a, q, k = vit_forward(teacher.backbone, glob[:, f], want_last=True)
            g.append(head_forward(teacher.head, tokens[:, 0]))
            z.append(tokens[:, 1:])
            att.append(a)
            qs.append(q)
            ks.append(k)
        a = att[0][:, :, 0, 1:]  # (B, h, N)
        qc = qs[0][:, :, 1:].transpose(1, 2).reshape(b, -1, d)
        protos = a[:, heads] @ qc  # (B, K, D)
        zn = F.normalize(z[0], dim=-1)
        logits = zn @ protos.transpose(1, 2)
        plan = torch.stack([sinkhorn_one(logits[i]) for i in range(b)])  # (B, N, K)
        refined = plan.transpose(1, 2) @ zn
        masked_clips = []
        for obj in range(len(heads)):
            frames = []
            for f in range(t):
                kc = ks[f][:, :, 1:].transpose(1, 2).reshape(b, -1, d)
                s = torch.softmax(refined[:, obj : obj + 1] @ kc.transpose(1, 2) / math.sqrt(d), dim=-1)[:, 0]
                s = F.normalize(s, dim=-1)
                m = (s > s.mean()).float()  # one mean over the whole batch
                side = int(math.sqrt(m.shape[1]))
                m = m.reshape(b, 1, side, side)
                m = F.interpolate(m, scale_factor=patch, mode="nearest")
                frames.append(glob[:, f] * m)
            masked_clips.append(frames)
    total, acc = 0.0, 0.0
    terms = []
    for obj in range(len(heads)):
        obj_sum = 0.0
        for f in range(t):
            q = F.softmax((g[f] - center) / teacher_temp, dim=-1)
            s_out = head_forward(student.head, vit_forward(student.backbone, masked_clips[obj][f]))
            mask_term = torch.sum(-q * F.log_softmax(s_out / student_temp, dim=-1), dim=-1).mean()
            local_terms = []
            for v in range(1, len(locals_)):
                l_out = head_forward(student.head, vit_forward(student.backbone, locals_[v][:, f]))
                local_terms.append(torch.sum(-q * F.log_softmax(l_out / student_temp, dim=-1), dim=-1).mean())
            term = 0.5 * (mask_term + sum(local_terms) / len(local_terms))
            terms.append(term)
            obj_sum = obj_sum + term
        acc = (acc + obj_sum) / t
        total = total + acc
    if weighting == "mean":
        return sum(terms) / len(terms)
    return total / len(heads)
