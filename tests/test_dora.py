"""DoRA's model, tracker and loss against the method doc's formulas and a plain transcription."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.reference_dora import reference_loss, sinkhorn_one
from wtours.dora import DoRA
from wtours.dora.config import DoRAConfig, LossConfig, teacher_temperature
from wtours.dora.loss import DoRALoss
from wtours.dora.tracker import apply_masks, discover, sinkhorn, track
from wtours.errors import WtoursError
from wtours.models.vit import cls_attention, create_vit


def crops(b=2, t=3, n=3, seed=0, size=224):
    """A clip batch: one global view of size x size and `n` local views of half that, (b, t, 3, H, W) each."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, t, 3, size, size, generator=g)] + [torch.randn(b, t, 3, size // 2, size // 2, generator=g)
                                                             for _ in range(n)]


def test_sinkhorn_plan_sums():
    logits = torch.randn(4, 196, 3) * 0.05  # cosine-like similarities: the 30 iterations converge
    plan = sinkhorn(logits)
    assert plan.shape == (4, 196, 3)
    assert torch.allclose(plan.sum(dim=2), torch.ones(4, 196), atol=1e-5)  # each patch's weights sum to 1
    # prototypes share the mass equally: each prototype's total is N/K (to the loop's convergence)
    assert torch.allclose(plan.sum(dim=1), torch.full((4, 3), 196 / 3), rtol=1e-2)
    assert torch.allclose(plan[1], sinkhorn_one(logits[1]), atol=1e-6)


def test_sinkhorn_survives_non_finite_input():
    logits = torch.randn(2, 16, 3)
    logits[0, 3, 1] = float("nan")
    plan = sinkhorn(logits)
    assert torch.isfinite(plan).all()


def test_discovery_and_masks_shapes_and_binarity():
    torch.manual_seed(0)
    b, h, n, d, t = 2, 6, 196, 384, 4
    prototypes = discover(torch.softmax(torch.randn(b, h, n), -1), torch.randn(b, n, d), torch.randn(b, n, d),
                          torch.tensor([0, 2, 5]))
    assert prototypes.shape == (b, 3, d)
    masks = track(prototypes, torch.randn(b * t, n, d), t)
    assert masks.shape == (3, b, t, n) and masks.dtype == torch.bool
    assert 0 < masks.float().mean() < 1
    assert not torch.equal(masks[0], masks[1])  # per object
    frames = torch.randn(b, t, 3, 224, 224)
    masked = apply_masks(frames, masks, 16)
    assert masked.shape == (3, b, t, 3, 224, 224)
    kept = masked[1, 0, 2] != 0
    patch_kept = masks[1, 0, 2].reshape(14, 14).repeat_interleave(16, 0).repeat_interleave(16, 1)
    assert torch.equal(kept.any(dim=0), patch_kept)


def test_threshold_is_one_mean_over_the_batch():
    """Per (object, frame) the threshold is the mean over all B*N values, not per sample."""
    prototypes = torch.randn(2, 1, 8)
    keys = torch.randn(2, 5, 8)
    masks = track(prototypes, keys, frames=1)
    s = torch.softmax(torch.einsum("bkd,bnd->bkn", prototypes, keys) / math.sqrt(8), -1)[:, 0]
    s = torch.nn.functional.normalize(s, dim=-1)
    assert torch.equal(masks[0, :, 0], s > s.mean())


def plain_loss(teacher, masked, local, center, teacher_temp, student_temp, weighting):
    """The authors' loss loop written out: per object, per frame, per local view (view 1 skipped)."""
    k, t = masked.shape[:2]
    total, acc, terms = 0.0, 0.0, []
    for obj in range(k):
        obj_sum = 0.0
        for f in range(t):
            q = torch.softmax((teacher[f] - center) / teacher_temp, -1)
            h = lambda x, q=q: -(q * torch.log_softmax(x / student_temp, -1)).sum(-1).mean()  # noqa: E731
            term = 0.5 * (h(masked[obj, f]) + sum(h(local[v, f]) for v in range(1, len(local))) / (len(local) - 1))
            terms.append(term)
            obj_sum = obj_sum + term
        acc = (acc + obj_sum) / t
        total = total + acc
    return total / k if weighting == "authors" else sum(terms) / len(terms)


@pytest.mark.parametrize("weighting", ["authors", "mean"])
def test_loss_matches_the_plain_loop(weighting):
    """The library's DoRALoss (both weightings, a non-zero centre, non-default temperatures from its
    config) against the loop above."""
    g = torch.Generator().manual_seed(3)
    teacher, masked, local = torch.randn(4, 2, 10, generator=g), torch.randn(3, 4, 2, 10, generator=g), \
        torch.randn(3, 4, 2, 10, generator=g)
    config = LossConfig(teacher_temp=0.06, student_temp=0.2, weighting=weighting)
    loss = DoRALoss(10, config)
    loss.center.copy_(torch.randn(1, 10, generator=g) * 0.1)
    expected = plain_loss(teacher, masked, local, loss.center, 0.06, 0.2, weighting)
    assert torch.isclose(loss(teacher, masked, local), expected, rtol=1e-5)
    assert not torch.isclose(DoRALoss(10, LossConfig(weighting=weighting))(teacher, masked, local), expected)


def test_teacher_temperature_warms_up_by_epoch_as_dino():
    """DINOLoss: concatenate(linspace(warmup, temp, W), ones(n - W) * temp)[epoch], transcribed."""
    config = LossConfig(teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=30)
    dino = np.concatenate((np.linspace(0.04, 0.07, 30), np.ones(100 - 30) * 0.07))
    assert [teacher_temperature(config, e) for e in range(100)] == dino.tolist()
    assert teacher_temperature(LossConfig(), 5) == 0.04
    teacher, masked, local = torch.randn(2, 2, 8), torch.randn(3, 2, 2, 8), torch.randn(3, 2, 2, 8)
    loss = DoRALoss(8, config)
    for epoch in (0, 10, 29, 50):  # the epoch argument reaches the temperature
        expected = plain_loss(teacher, masked, local, loss.center, dino[epoch], 0.1, "authors")
        assert torch.isclose(loss(teacher, masked, local, epoch), expected, rtol=1e-5), epoch


def test_center_update():
    loss = DoRALoss(4, LossConfig(center_momentum=0.8))
    teacher = torch.arange(24, dtype=torch.float32).reshape(3, 2, 4)
    loss.update_center(teacher)
    assert torch.allclose(loss.center, 0.2 * teacher.reshape(-1, 4).mean(0, keepdim=True))


@pytest.mark.slow
def test_last_attention_matches_explicit_attention():
    vit = create_vit("vit_micro").eval()
    x = torch.randn(2, 3, 224, 224)
    last = vit.forward_last_attention(x)
    assert torch.allclose(last.tokens[:, 0], vit(x), atol=1e-5)
    explicit = torch.softmax(last.queries @ last.keys.transpose(-2, -1) * last.queries.shape[-1] ** -0.5, -1)
    assert torch.allclose(cls_attention(last.queries, last.keys), explicit[:, :, 0], atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("weighting", ["authors", "mean"])
def test_compute_loss_and_gradients_match_the_reference(weighting):
    torch.manual_seed(0)
    model = DoRA("vit_micro", out_dim=256, n_local=3, drop_path=0.0, loss=LossConfig(weighting=weighting))
    with torch.no_grad():  # a non-zero centre, so its use is checked too
        model.loss.center.copy_(torch.randn(1, 256) * 0.1)
    batch = crops()
    heads = torch.tensor([2, 0, 1])
    loss = model.compute_loss(batch, heads=heads)
    loss.backward()
    ours = {n: p.grad.clone() for n, p in model.student.named_parameters()}
    model.zero_grad()
    reference = reference_loss(model, batch, heads, model.loss.center, weighting)
    reference.backward()
    assert torch.isclose(loss, reference, rtol=1e-4), (loss.item(), reference.item())
    for name, param in model.student.named_parameters():
        rel = (ours[name] - param.grad).norm() / param.grad.norm().clamp(min=1e-12)
        assert rel < 1e-4, (name, rel.item())


def test_heads_are_drawn_distinct_and_injectable():
    model = DoRA("vit_micro", out_dim=64, n_local=2)
    heads = model.draw_heads(torch.Generator().manual_seed(1))
    assert len(set(heads.tolist())) == 3
    with pytest.raises(WtoursError, match="local views"):
        model.compute_loss(crops(n=3))


@pytest.mark.slow
def test_official_checkpoint_layout_loads(tmp_path):
    """A checkpoint in the authors' layout: 'student'/'teacher' dicts, keys prefixed 'module.', args inside."""
    import argparse

    source = DoRA("vit_micro", out_dim=64, n_local=2)
    state = {"student": {f"module.{k}": v for k, v in source.student.state_dict().items()},
             "teacher": {f"module.{k}": v for k, v in source.teacher.state_dict().items()},
             "args": argparse.Namespace(arch="vit_small"), "epoch": 100,
             "dora_loss": {"center": torch.full((1, 64), 0.5)}}
    path = tmp_path / "dora.pth"
    torch.save(state, path)
    target = DoRA("vit_micro", out_dim=64, n_local=2)
    target.load_official_checkpoint(path)
    assert torch.equal(target.student.backbone.pos_embed, source.student.backbone.pos_embed)
    assert torch.equal(target.loss.center, torch.full((1, 64), 0.5))
    with pytest.raises(WtoursError, match="does not fit"):
        DoRA("vit_micro", out_dim=128, n_local=2).load_official_checkpoint(path)



@pytest.mark.parametrize("content", [[1, 2, 3], {"teacher": [1, 2]}, {"student": "text", "teacher": {}}])
def test_an_init_checkpoint_that_is_not_one_is_named_not_a_traceback(tmp_path, content):
    """`--init-from` reads its file through the same checks as every other checkpoint reader: a pickled list, or
    networks that are not dicts of weights, end in a WtoursError naming the file (not an AttributeError)."""
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    with pytest.raises(WtoursError, match="odd.pth"):
        DoRA("vit_micro", out_dim=64, n_local=2).load_official_checkpoint(path)


def test_an_init_checkpoint_with_an_odd_loss_entry_loads_its_weights_and_keeps_the_center(tmp_path):
    source = DoRA("vit_micro", out_dim=64, n_local=2)
    path = tmp_path / "dora.pth"
    torch.save({"student": source.student.state_dict(), "teacher": source.teacher.state_dict(),
                "dora_loss": torch.ones(3)}, path)  # not the dict of buffers a loss's state_dict is
    target = DoRA("vit_micro", out_dim=64, n_local=2)
    before = target.loss.center.clone()
    target.load_official_checkpoint(path)
    assert torch.equal(target.teacher.backbone.pos_embed, source.teacher.backbone.pos_embed)
    assert torch.equal(target.loss.center, before)

def test_the_model_takes_its_loss_temperatures_from_its_config():
    """DoRA(config): change the temperatures (and their per-epoch warm-up) in the config, and the loss follows."""
    torch.manual_seed(0)
    base = DoRA(DoRAConfig(arch="vit_micro", out_dim=128, n_local=3, drop_path=0.0))
    config = replace(base.config, loss=LossConfig(teacher_temp=0.07, warmup_teacher_temp=0.05,
                                                  warmup_teacher_temp_epochs=3, student_temp=0.2))
    model = DoRA(config)
    model.load_state_dict(base.state_dict())  # the same weights, only the loss settings differ
    assert model.config == config and model.loss.config == config.loss
    # small views: what is checked is where the temperatures come from, not the model at full size
    batch, heads = crops(b=1, t=2, size=96), torch.tensor([2, 0, 1])
    with torch.no_grad():
        for epoch, temp in ((1, 0.06), (5, 0.07)):  # in the warm-up, then after it
            ours = model.compute_loss(batch, heads=heads, epoch=epoch)
            expected = reference_loss(model, batch, heads, model.loss.center, teacher_temp=temp, student_temp=0.2)
            assert torch.isclose(ours, expected, rtol=1e-4), (epoch, ours.item(), expected.item())
        assert not torch.isclose(base.compute_loss(batch, heads=heads, epoch=5), ours, rtol=1e-3)
