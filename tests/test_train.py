"""`wtours train` / `wtours export` end to end on CPU: logs, checkpoints, resume, timm, torchrun, NaN stop."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.videos import sharded_root
from wtours.dora import DoRA
from wtours.train.optim import clip_per_tensor, cosine_schedule, ema_update, param_groups

WTOURS = [sys.executable, "-m", "wtours"]
TINY = ["--arch", "vit_tiny", "--out-dim", "512", "--batch-size", "2", "--clip-frames", "2", "--n-local", "2",
        "--workers", "1", "--log-every", "1"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return sharded_root(tmp_path_factory.mktemp("train"), seconds=20.0, samples_per_shard=10)


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*WTOURS, *args], capture_output=True, text=True, timeout=600, **kwargs)


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_tiny_run_resume_and_export_to_timm(root, tmp_path):
    out = tmp_path / "run"
    first = run(["train", "--shards", "walk", "--root", str(root), "--out", str(out), "--steps", "2", *TINY])
    assert first.returncode == 0, first.stderr
    log = read_log(out)
    assert [r["step"] for r in log] == [1, 2]
    for record in log:
        assert set(record) >= {"step", "loss", "lr", "wd", "momentum", "clips_per_s", "data_wait"}
        assert torch.isfinite(torch.tensor(record["loss"]))
    assert (out / "checkpoint.pth").is_file() and (out / "config.json").is_file()
    assert list((out / "tensorboard").glob("events.*"))
    checkpoint = torch.load(out / "checkpoint.pth", weights_only=False)
    assert checkpoint["step"] == 2 and set(checkpoint) >= {"student", "teacher", "dora_loss", "optimizer"}

    second = run(["train", "--shards", "walk", "--root", str(root), "--out", str(out), "--steps", "4", "--resume",
                  *TINY])
    assert second.returncode == 0, second.stderr
    assert "resumed" in second.stdout and "at step 2" in second.stdout
    assert [r["step"] for r in read_log(out)] == [1, 2, 3, 4]
    assert torch.load(out / "checkpoint.pth", weights_only=False)["step"] == 4
    data = [json.loads(line) for line in (out / "data.rank0.jsonl").read_text().splitlines()]
    assert [d["step"] for d in data] == [1, 2, 3, 4]

    exported = tmp_path / "vit_tiny.pth"
    assert run(["export", str(out / "checkpoint.pth"), "--out", str(exported)]).returncode == 0
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    model.load_state_dict(torch.load(exported))  # strict
    ours = DoRA("vit_tiny", out_dim=512, n_local=2)
    ours.load_official_checkpoint(out / "checkpoint.pth")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), ours.teacher.backbone.eval()(x), atol=1e-4)


def test_resume_continues_the_data_position(root, tmp_path):
    """Killed after step 2 of an epoch and resumed: steps 3-4 see the batches an uninterrupted run sees."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    common = ["train", "--shards", "walk", "--root", str(root), "--arch", "vit_micro", "--out-dim", "64",
              "--batch-size", "2", "--clip-frames", "2", "--n-local", "2", "--workers", "2", "--log-every", "1"]
    assert run([*common, "--out", str(whole), "--steps", "4"]).returncode == 0
    assert run([*common, "--out", str(split), "--steps", "2"]).returncode == 0
    assert run([*common, "--out", str(split), "--steps", "4", "--resume"]).returncode == 0
    keys = lambda out: [json.loads(l)["keys"] for l in (out / "data.rank0.jsonl").read_text().splitlines()]  # noqa: E731
    assert keys(whole) == keys(split)


def test_non_finite_loss_stops_and_keeps_the_good_checkpoint(root, tmp_path):
    out = tmp_path / "run"
    common = ["train", "--shards", "walk", "--root", str(root), "--out", str(out), "--arch", "vit_micro",
              "--out-dim", "64", "--batch-size", "2", "--clip-frames", "2", "--n-local", "2", "--workers", "0"]
    assert run([*common, "--steps", "1"]).returncode == 0
    good = hashlib.sha256((out / "checkpoint.pth").read_bytes()).hexdigest()
    poisoned = DoRA("vit_micro", out_dim=64, n_local=2)
    with torch.no_grad():
        poisoned.student.head.mlp[0].weight.fill_(float("nan"))
        poisoned.teacher.head.mlp[0].weight.fill_(float("nan"))
    bad = tmp_path / "nan.pth"
    torch.save({"student": poisoned.student.state_dict(), "teacher": poisoned.teacher.state_dict()}, bad)
    result = run([*common, "--steps", "3", "--init-from", str(bad)])
    assert result.returncode == 4
    assert "at step 1" in result.stderr and "checkpoint.pth" in result.stderr
    assert hashlib.sha256((out / "checkpoint.pth").read_bytes()).hexdigest() == good


def test_torchrun_two_cpu_processes_see_different_data(root, tmp_path):
    out = tmp_path / "ddp"
    with socket.socket() as s:  # torchrun needs a real free port (port 0 hangs its rendezvous)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(port),
           "-m", "wtours", "train", "--shards", "walk", "--root", str(root), "--out", str(out), "--arch", "vit_micro",
           "--out-dim", "64", "--batch-size", "2", "--clip-frames", "2", "--n-local", "2", "--workers", "0",
           "--steps", "2", "--log-every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [[k for line in (out / f"data.rank{r}.jsonl").read_text().splitlines() for k in json.loads(line)["keys"]]
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 4
    assert not set(ranks[0]) & set(ranks[1])
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    # DDP kept the students in step: both ranks end with the same teacher (saved by rank 0 only)
    assert [r["step"] for r in read_log(out)] == [1, 2]


def test_schedules_and_optimiser_pieces():
    lr = cosine_schedule(1.0, 0.1, total_steps=20, warmup_steps=5)
    assert len(lr) == 20 and lr[0] == 0.0 and lr[5] == pytest.approx(1.0) and lr[-1] > 0.1
    assert all(a <= b for a, b in zip(lr[:5], lr[1:6]))
    model = DoRA("vit_micro", out_dim=32, n_local=2)
    decay, no_decay = param_groups(model.student)
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))]
    params[0].grad, params[1].grad = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([0.3, 0.4])
    clip_per_tensor(params, 3.0)
    assert params[0].grad.norm() == pytest.approx(3.0, rel=1e-5) and params[1].grad.norm() == pytest.approx(0.5)
    teacher, student = [torch.ones(2)], [torch.zeros(2)]
    ema_update(teacher, student, 0.9)
    assert torch.allclose(teacher[0], torch.full((2,), 0.9))
