"""`wtours eval linear`, DINO's linear probe: against scikit-learn's logistic regression on the same frozen
features, the protocol's pieces (init, lr scaling, cosine, the features against a hand-written ViT forward), a
resume after a real kill, the command end to end on rendered images and under torchrun, and its refusals."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.cli import assert_clean_error, run_wtours, start_wtours
from tests.conftest import write_digits
from tests.test_train import child_env, free_port
from wtours.eval.config import LinearConfig
from wtours.eval.data import labelled_pair
from wtours.eval.linear import Features, cosine_lr, linear_layer, linear_probe, probe_features, scaled_lr
from wtours.layout import TEMPORARY_GLOB
from wtours.locks import folder_lock
from wtours.models.checkpoint import load_backbone
from wtours.models.vit import create_vit

COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (40, 60, 210)}
SMALL = ["--resize", "32", "--crop", "32", "--workers", "0", "--batch-size", "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny rendered ImageFolder: a coloured square (the class) at a random place on grey noise, 32 x 32;
    12 train and 6 val images per class."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        for i in range(18):
            pixels = rng.integers(90, 160, (32, 32, 3), dtype=np.uint8)
            y, x = rng.integers(0, 16, 2)
            pixels[y:y + 16, x:x + 16] = colour
            folder = root / ("val" if i % 3 == 0 else "train") / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return root / "train", root / "val"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A random-init vit_micro (4 blocks) in a training checkpoint's layout: the teacher and a different student."""
    torch.manual_seed(0)
    teacher, student = create_vit("vit_micro").state_dict(), create_vit("vit_micro").state_dict()
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in teacher.items()},
                "student": {f"backbone.{k}": v for k, v in student.items()}}, path)
    return path


def wtours_linear(ckpt: Path, train: Path, val: Path, out: Path, *extra: str):
    return run_wtours(["eval", "linear", ckpt, "--train", train, "--val", val, "--out", out, *SMALL, *extra])


def test_probe_reaches_logistic_regression_on_the_same_features(checkpoint, tmp_path):
    """The fast mode's probe (100 epochs, SGD, cosine) on a random ViT's frozen features of half of
    scikit-learn's digits, against scikit-learn's LogisticRegression (L-BFGS, C = 1) fitted on those features."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    train_dir, val_dir = write_digits(tmp_path / "digits", every=2)
    config = LinearConfig(train=str(train_dir), val=str(val_dir), out=str(tmp_path / "probe"), mode="fast",
                          resize=32, crop=32, workers=0, lr=1.0, device="cpu")
    result, _ = linear_probe(checkpoint, config, say=lambda line: None)
    backbone, _ = load_backbone(checkpoint)
    train, val = labelled_pair(train_dir, val_dir, 32, 32)
    features = Features(backbone, config, torch.device("cpu"), 4 * 96)
    (x_train, y_train), (x_val, y_val) = (d.tensors for d in (features.cached(train), features.cached(val)))
    reference = linear_model.LogisticRegression(max_iter=2000).fit(x_train.numpy(), y_train.numpy())
    expected = 100 * reference.score(x_val.numpy(), y_val.numpy())
    assert result["val_images"] == len(y_val) and result["train_images"] == len(y_train)
    assert expected > 60  # the features carry the digits (chance: 10 %)
    assert abs(result["top1"] - expected) < 5, (result["top1"], expected)


def test_init_lr_scaling_and_cosine_schedule():
    torch.manual_seed(0)
    layer = linear_layer(384 * 4, 1000)
    assert abs(layer.weight.std().item() - 0.01) < 2e-4 and abs(layer.weight.mean().item()) < 1e-4
    assert torch.equal(layer.bias, torch.zeros(1000))
    authors = LinearConfig(train="t", val="v", lr=0.01, batch_size=512)  # their published run, on 4 GPUs
    assert scaled_lr(authors, 4) == pytest.approx(0.08)
    assert scaled_lr(LinearConfig(train="t", val="v"), 1) == pytest.approx(0.001 * 128 / 256)
    optimizer = torch.optim.SGD(layer.parameters(), 0.08, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 100, eta_min=0)
    for epoch in range(100):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(cosine_lr(0.08, epoch, 100), rel=1e-9, abs=1e-15)
        optimizer.step()
        scheduler.step()
    assert cosine_lr(0.08, 0, 100) == 0.08 and cosine_lr(0.08, 50, 100) == pytest.approx(0.04)
    assert cosine_lr(0.08, 100, 100) == pytest.approx(0, abs=1e-15)


def hand_vit_layers(vit, x: torch.Tensor) -> list[torch.Tensor]:
    """DINO's ViT forward written out with plain tensor ops: the final-norm tokens after every block."""
    s = vit.state_dict()
    p = vit.config.patch_size
    b = x.shape[0]
    patches = x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(b, -1, 3 * p * p)
    tokens = patches @ s["patch_embed.proj.weight"].reshape(len(s["cls_token"][0, 0]), -1).T \
        + s["patch_embed.proj.bias"]
    tokens = torch.cat([s["cls_token"].expand(b, -1, -1), tokens], dim=1) + s["pos_embed"]
    heads, out = vit.config.heads, []

    def norm(t, name):
        return F.layer_norm(t, t.shape[-1:], s[f"{name}.weight"], s[f"{name}.bias"], eps=1e-6)

    for i in range(vit.config.depth):
        n, d = tokens.shape[1], tokens.shape[2]
        qkv = norm(tokens, f"blocks.{i}.norm1") @ s[f"blocks.{i}.attn.qkv.weight"].T + s[f"blocks.{i}.attn.qkv.bias"]
        q, k, v = qkv.reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
        mixed = (attention @ v).transpose(1, 2).reshape(b, n, d)
        tokens = tokens + mixed @ s[f"blocks.{i}.attn.proj.weight"].T + s[f"blocks.{i}.attn.proj.bias"]
        hidden = F.gelu(norm(tokens, f"blocks.{i}.norm2") @ s[f"blocks.{i}.mlp.fc1.weight"].T
                        + s[f"blocks.{i}.mlp.fc1.bias"])
        tokens = tokens + hidden @ s[f"blocks.{i}.mlp.fc2.weight"].T + s[f"blocks.{i}.mlp.fc2.bias"]
        out.append(norm(tokens, "norm"))
    return out


def test_features_are_the_last_blocks_cls_tokens_of_a_hand_computed_forward():
    torch.manual_seed(1)
    vit = create_vit("vit_micro").eval()  # 4 blocks, width 96, 224 x 224 inputs: 196 patches
    x = torch.randn(2, 3, 224, 224)
    layers = hand_vit_layers(vit, x)
    with torch.no_grad():
        four = probe_features(vit, x, 4, False)
        two = probe_features(vit, x, 2, False)
        pooled = probe_features(vit, x, 1, True)
    torch.testing.assert_close(four, torch.cat([t[:, 0] for t in layers], dim=1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(two, torch.cat([layers[2][:, 0], layers[3][:, 0]], dim=1), atol=1e-4, rtol=1e-4)
    # with the patch tokens' mean: DINO's cat((cls[..., None], mean[..., None]), -1).reshape(B, -1) interleaves them
    mean = layers[3][:, 1:].mean(dim=1)
    assert pooled.shape == (2, 2 * 96)
    torch.testing.assert_close(pooled[:, 0::2], layers[3][:, 0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pooled[:, 1::2], mean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(vit(x), layers[3][:, 0], atol=1e-4, rtol=1e-4)  # the last block's [CLS] is k-NN's


def test_command_end_to_end_protocol_and_fast_mode(checkpoint, shapes, tmp_path):
    out = tmp_path / "probe"
    done = wtours_linear(checkpoint, *shapes, out, "--epochs", "3", "--n-last-blocks", "2", "--save-every", "0")
    assert done.exit_code == 0, done.output
    result = json.loads((out / "linear.json").read_text())
    assert "linear probe (3 epochs, vit_micro teacher, n_last_blocks 2)" in done.stdout
    assert f"top-1 {result['top1']:.2f}%" in done.stdout and "epoch 3/3:" in done.stdout
    assert (result["mode"], result["mode_label"]) == ("protocol", "the authors' protocol (DINO's eval_linear.py)")
    assert (result["classes"], result["train_images"], result["val_images"]) == (3, 36, 18)
    assert result["top5"] == 100.0 and result["scaled_lr"] == pytest.approx(0.001 * 8 / 256)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [0, 1, 2]
    assert [e["lr"] for e in log] == pytest.approx([cosine_lr(0.001 * 8 / 256, e, 3) for e in range(3)])
    assert log[-1]["top1"] == result["top1"] and result["best_top1"] == max(e["top1"] for e in log)
    weights = torch.load(out / "checkpoint.pth")["linear"]["weight"]
    assert weights.shape == (3, 2 * 96)

    again = run_wtours(["eval", "linear", checkpoint, "--config", out / "config.json"])  # finished: not retrained
    assert again.exit_code == 0, again.output
    assert "epoch " not in again.stdout and f"top-1 {result['top1']:.2f}%" in again.stdout
    assert torch.equal(torch.load(out / "checkpoint.pth")["linear"]["weight"], weights)

    damaged = tmp_path / "damaged"
    shutil.copytree(shapes[0], damaged)
    (damaged / "red" / "truncated.png").write_bytes((damaged / "red" / "01.png").read_bytes()[:60])
    fast = wtours_linear(checkpoint, damaged, shapes[1], tmp_path / "fast", "--mode", "fast", "--epochs", "30",
                         "--lr", "1", "--key", "student")
    assert fast.exit_code == 0, fast.output
    fast_result = json.loads((tmp_path / "fast" / "linear.json").read_text())
    assert fast_result["bad_images"] == [str(damaged / "red" / "truncated.png")] and fast_result["train_images"] == 36
    assert "1 images that do not decode skipped" in fast.stdout
    assert fast_result["mode"] == "fast" and "not the authors' protocol" in fast_result["mode_label"]
    assert "[fast mode: features computed once, no augmentation]" in fast.stdout
    assert fast_result["top1"] > 80  # colours are easy: it learns (chance: 33 %)
    assert not list(tmp_path.rglob(TEMPORARY_GLOB))


@pytest.mark.slow
def test_resume_after_a_kill_ends_as_an_uninterrupted_probe(checkpoint, shapes, tmp_path):
    args = ["--epochs", "30", "--save-every", "0", "--val-every", "10", "--n-last-blocks", "1"]
    whole = wtours_linear(checkpoint, *shapes, tmp_path / "whole", *args)
    assert whole.exit_code == 0, whole.output
    out = tmp_path / "killed"
    proc = start_wtours(["eval", "linear", checkpoint, "--train", shapes[0], "--val", shapes[1], "--out", out,
                         *SMALL, *args])
    deadline = time.monotonic() + 300  # a hang guard: the first epochs take well under a second
    while not ((out / "log.jsonl").exists() and len((out / "log.jsonl").read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (out / "linear.json").exists()  # killed mid-probe
    resumed = wtours_linear(checkpoint, *shapes, out, *args)
    assert resumed.exit_code == 0, resumed.output
    assert "resuming the probe" in resumed.stdout
    ends = [json.loads((folder / "linear.json").read_text()) for folder in (tmp_path / "whole", out)]
    assert [(e["top1"], e["top5"]) for e in ends[0:1]] == [(e["top1"], e["top5"]) for e in ends[1:]]
    assert (tmp_path / "whole" / "log.jsonl").read_text() == (out / "log.jsonl").read_text()
    states = [torch.load(folder / "checkpoint.pth")["linear"] for folder in (tmp_path / "whole", out)]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not list(tmp_path.rglob(TEMPORARY_GLOB))


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_with_the_global_batch(checkpoint, shapes, tmp_path):
    """Fast mode (no augmentation): 2 processes x 4 images step as 1 process x 8 (DistributedSampler splits one
    permutation, DDP averages the gradients), so the probes end alike."""
    one = wtours_linear(checkpoint, *shapes, tmp_path / "one", "--mode", "fast", "--epochs", "5", "--lr", "1")
    assert one.exit_code == 0, one.output
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), "-m", "wtours", "eval", "linear", str(checkpoint), "--train",
           str(shapes[0]), "--val", str(shapes[1]), "--out", str(tmp_path / "two"), "--mode", "fast", "--epochs", "5",
           "--lr", "1", *[a if a != "8" else "4" for a in SMALL]]
    two = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=child_env())
    assert two.returncode == 0, two.stderr[-3000:]
    ends = [json.loads((tmp_path / name / "linear.json").read_text()) for name in ("one", "two")]
    assert ends[1]["world_size"] == 2 and ends[1]["global_batch"] == 8 and ends[1]["val_images"] == 18
    assert ends[0]["top1"] == ends[1]["top1"] and ends[0]["scaled_lr"] == ends[1]["scaled_lr"]
    states = [torch.load(tmp_path / name / "checkpoint.pth")["linear"] for name in ("one", "two")]
    torch.testing.assert_close(states[0], states[1], atol=1e-5, rtol=1e-4)


def test_refusals_are_one_clear_error(checkpoint, shapes, tmp_path):
    train, val = shapes
    missing = wtours_linear(checkpoint, tmp_path / "nowhere", val, tmp_path / "a")
    assert_clean_error(missing, 2, "is not a labelled image folder")
    no_val = run_wtours(["eval", "linear", checkpoint, "--train", train])
    assert_clean_error(no_val, 2, "--val missing")
    odd = tmp_path / "odd-val"
    (odd / "purple").mkdir(parents=True)
    Image.new("RGB", (32, 32), (120, 0, 120)).save(odd / "purple" / "0.png")
    assert_clean_error(wtours_linear(checkpoint, train, odd, tmp_path / "b"), 2,
                       "classes the train folder lacks: purple")
    assert_clean_error(wtours_linear(checkpoint, train, val, tmp_path / "c", "--set", "learning_rate=0.1"), 2,
                       "unknown setting 'learning_rate' in --set")
    assert_clean_error(wtours_linear(checkpoint, train, val, tmp_path / "c", "--set", "epochs=0"), 2, "out of range")
    assert_clean_error(wtours_linear(checkpoint, train, val, tmp_path / "c", "--set", "lr=fast"), 2, "lr")
    assert_clean_error(wtours_linear(checkpoint, train, val, tmp_path / "c", "--avgpool-patchtokens"), 2,
                       "--n-last-blocks 1")
    assert_clean_error(wtours_linear(checkpoint, train, val, tmp_path / "c", "--n-last-blocks", "9"), 2,
                       "vit_micro has 4 blocks")
    assert not (tmp_path / "c").exists()  # refused before anything was written
    first = wtours_linear(checkpoint, train, val, tmp_path / "d", "--epochs", "1", "--mode", "fast")
    assert first.exit_code == 0, first.output
    other = wtours_linear(checkpoint, train, val, tmp_path / "d", "--epochs", "1", "--mode", "fast", "--lr", "0.5")
    assert_clean_error(other, 2, "holds a probe with other settings (lr: 0.001 there)")
    with folder_lock(tmp_path / "d", "another probe"):  # a real flock, as a running probe holds it
        assert_clean_error(wtours_linear(checkpoint, train, val, tmp_path / "d", "--epochs", "1", "--mode", "fast"),
                           1, "probe folder")
    saved = torch.load(tmp_path / "d" / "checkpoint.pth")
    torch.save({**saved, "linear": {"weight": torch.zeros(2, 2)}}, tmp_path / "d" / "checkpoint.pth")  # replaced
    assert_clean_error(wtours_linear(checkpoint, train, val, tmp_path / "d", "--epochs", "1", "--mode", "fast"), 1,
                       "does not hold this probe's state")
    grown = tmp_path / "grown"
    shutil.copytree(train, grown)
    shutil.copytree(train / "red", grown / "yellow")
    assert_clean_error(wtours_linear(checkpoint, grown, val, tmp_path / "d", "--epochs", "1", "--mode", "fast"), 2,
                       "other settings (classes, train: 3,")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "checkpoint.pth").write_bytes(b"not a checkpoint")
    assert_clean_error(wtours_linear(checkpoint, train, val, tmp_path / "e"), 1, "not a readable PyTorch checkpoint")
