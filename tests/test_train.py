"""`wtours train` / `wtours export` end to end on CPU: logs, checkpoints, resume, timm, torchrun, NaN stop."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.cli import run_wtours
from tests.cli import run_wtours_process as run  # the end-to-end runs: real processes
from tests.videos import sharded_root
from wtours.cli.train_cmd import config_from_args
from wtours.clips.spec import resolve_sets
from wtours.config import leaves
from wtours.distributed import Dist, read_launch, slurm_port
from wtours.dora import DoRA
from wtours.errors import WtoursError
from wtours.layout import Layout
from wtours.system import default_workers, expand_nodelist, usable_cpus
from wtours.train.config import TrainConfig
from wtours.train.optim import clip_per_tensor, cosine_schedule, ema_update, param_groups
from wtours.train.run import build_data, build_schedules

WTOURS = [sys.executable, "-m", "wtours"]
TINY = ["--arch", "vit_tiny", "--out-dim", "512", "--batch-size", "2", "--clip-frames", "2", "--n-local", "2",
        "--workers", "1", "--log-every", "1"]


@pytest.fixture(scope="module")
def root(canonical_roots, tmp_path_factory) -> Path:
    return canonical_roots.copy("walk-20s", tmp_path_factory.mktemp("train") / "root")


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
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
    recorded = json.loads((out / "config.json").read_text())
    rerun = config_from_args(["--config", str(out / "config.json")])  # --config reruns it
    assert json.loads(json.dumps(rerun.to_dict())) == recorded
    assert recorded["model"]["arch"] == "vit_tiny" and recorded["workers"] == 1
    assert list((out / "tensorboard").glob("events.*"))
    checkpoint = torch.load(out / "checkpoint.pth", weights_only=False)
    assert checkpoint["step"] == 2 and set(checkpoint) >= {"student", "teacher", "dora_loss", "optimizer"}

    second = run(["train", "--shards", "walk", "--root", str(root), "--out", str(out), "--steps", "4", "--resume",
                  "--reschedule", *TINY])
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


@pytest.mark.slow
def test_resume_continues_the_data_position(root, tmp_path):
    """Killed after step 2 of an epoch and resumed: steps 3-4 see the batches an uninterrupted run sees."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    common = ["train", "--shards", "walk", "--root", str(root), "--arch", "vit_micro", "--out-dim", "64",
              "--batch-size", "2", "--clip-frames", "2", "--n-local", "2", "--workers", "2", "--log-every", "1"]
    assert run([*common, "--out", str(whole), "--steps", "4"]).returncode == 0
    assert run([*common, "--out", str(split), "--steps", "2"]).returncode == 0
    assert run([*common, "--out", str(split), "--steps", "4", "--resume", "--reschedule"]).returncode == 0
    keys = lambda out: [json.loads(line)["keys"]  # noqa: E731
                        for line in (out / "data.rank0.jsonl").read_text().splitlines()]
    assert keys(whole) == keys(split)


@pytest.mark.slow
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
    result = run([*common, "--steps", "3", "--init-from", str(bad), "--out", str(tmp_path / "nan")])
    assert result.returncode == 4
    assert "at step 1" in result.stderr and "no checkpoint was written yet" in result.stderr
    assert not (tmp_path / "nan" / "checkpoint.pth").exists()  # nothing kept from a non-finite state
    assert hashlib.sha256((out / "checkpoint.pth").read_bytes()).hexdigest() == good


# Runs `wtours train ARGS` in this process through the real CLI, then saves this rank's teacher (the
# model is the one the run built: build_model is wrapped only to keep a reference to it).
CHILD = """
import sys, torch
from wtours.cli.main import cli
from wtours import distributed
from wtours.train import run
built = []
build = run.build_model
run.build_model = lambda config, device: built.append(build(config, device)) or built[-1]
cli(sys.argv[1:], standalone_mode=False)
rank = distributed.read_launch().rank
out = sys.argv[sys.argv.index("--out") + 1]
torch.save(built[0].teacher.state_dict(), f"{out}/teacher.rank{rank}.pth")
"""
DDP_ARGS = ["--arch", "vit_micro", "--out-dim", "64", "--batch-size", "2", "--clip-frames", "2", "--n-local", "2",
            "--steps", "2", "--log-every", "1"]


def free_port(low: int = 0, high: int = 0) -> int:
    """A port nobody listens on (torchrun's rendezvous hangs on port 0), in [low, high) when given."""
    for candidate in ([0] if not high else np.random.default_rng().permutation(range(low, high))[:200].tolist()):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", int(candidate)))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def assert_two_ranks_trained_together(out: Path) -> None:
    """Both ranks saw different clips, and end with the same teacher, equal to rank 0's checkpoint."""
    ranks = [[k for line in (out / f"data.rank{r}.jsonl").read_text().splitlines() for k in json.loads(line)["keys"]]
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 4
    assert not set(ranks[0]) & set(ranks[1])
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    assert [r["step"] for r in read_log(out)] == [1, 2]
    teachers = [torch.load(out / f"teacher.rank{r}.pth") for r in range(2)]
    saved = torch.load(out / "checkpoint.pth", weights_only=False)["teacher"]
    start = DoRA("vit_micro", out_dim=64, n_local=2).teacher.state_dict()
    assert teachers[0].keys() == teachers[1].keys() == saved.keys()
    for name in saved:
        assert torch.equal(teachers[0][name], teachers[1][name]), name  # DDP kept the students in step
        assert torch.equal(teachers[0][name], saved[name]), name
    assert not torch.equal(saved["head.mlp.0.weight"], start["head.mlp.0.weight"])  # it did train


def child_env(**extra: str) -> dict[str, str]:
    launcher = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in launcher}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.slow
def test_torchrun_two_cpu_processes_see_different_data_and_keep_one_teacher(root, tmp_path):
    out = tmp_path / "ddp"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), str(script), "train", "--shards", "walk", "--root", str(root),
           "--out", str(out), "--workers", "0", *DDP_ARGS]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=child_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert_two_ranks_trained_together(out)


@pytest.mark.slow
def test_srun_tasks_without_torchrun_join_one_process_group(root, tmp_path):
    """Two processes with only SLURM's variables (as srun starts them): ranks 0 and 1, one teacher;
    the rendezvous port comes from the job id, the loader workers from SLURM_CPUS_PER_TASK."""
    out = tmp_path / "slurm"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    job = str(free_port(15000, 25000) - 15000 + 70000)  # slurm_port keeps the last 4 digits
    cmd = [sys.executable, str(script), "train", "--shards", "walk", "--root", str(root), "--out", str(out),
           *DDP_ARGS]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(
        SLURM_PROCID=str(r), SLURM_NTASKS="2", SLURM_LOCALID=str(r), SLURM_NODELIST="localhost",
        SLURM_JOB_ID=job, SLURM_CPUS_PER_TASK="1")) for r in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    assert_two_ranks_trained_together(out)
    assert json.loads((out / "run.json").read_text())["workers"] == 1


def test_launch_read_from_slurm_or_torchrun():
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "5", "SLURM_NODELIST": "gpu[07-08]",
             "SLURM_JOB_ID": "123456"}
    launch = read_launch(slurm)
    assert (launch.rank, launch.world_size, launch.local_rank) == (5, 16, 5)
    assert launch.init_method == f"tcp://gpu07:{slurm_port('123456')}" and slurm_port("123456") == 18456
    assert read_launch({**slurm, "MASTER_PORT": "29400"}).init_method == "tcp://gpu07:29400"
    torchrun = read_launch({**slurm, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (torchrun.rank, torchrun.world_size, torchrun.local_world_size, torchrun.init_method) == (1, 2, 2, "env://")
    assert read_launch({**slurm, "SLURM_NTASKS": "1"}).world_size == 1  # one srun task: no process group
    assert read_launch({}).world_size == 1


class _Cycle:
    """Holds a model in a reference cycle, which only the garbage collector frees."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.me = model, self


@pytest.mark.parametrize("fails", [False, True])
def test_leaving_the_process_group_frees_a_ddp_model_left_in_a_cycle(fails):
    """A DDP model keeps Gloo's process group alive; freed only at interpreter exit it aborted a torchrun rank
    (CI: rank 0 'terminate called without an active exception'). setup frees it before the process ends, on the
    error path too (the error's frames hold it); the collector is off here, so only setup can free it."""
    import gc
    import weakref

    import torch.distributed as torch_dist

    from wtours.distributed import setup

    def build_and_train(fail: bool):
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
        _Cycle(model)
        model(torch.randn(3, 4)).sum().backward()  # the reducer's buckets: as a training step leaves them
        refs.append(weakref.ref(model))
        if fail:
            raise WtoursError("stopped", "rerun")

    refs: list = []
    gc.collect()
    gc.disable()
    try:
        torch_dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
        if fails:
            with pytest.raises(WtoursError) as raised, setup("cpu"):
                build_and_train(True)
            assert raised.value.__traceback__ is not None  # the error and its traceback are still alive here
        else:
            with setup("cpu"):
                build_and_train(False)
        assert not torch_dist.is_initialized()
        assert refs[0]() is None
    finally:
        gc.enable()
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()


@pytest.mark.parametrize("nodelist,hosts", [
    ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
    ("gpu-a[1-2],gpu-b5", ["gpu-a1", "gpu-a2", "gpu-b5"]),
    ("localhost", ["localhost"]),
    ("n[8-10]", ["n8", "n9", "n10"]),
    ("r[1-2]-n[01-02]", ["r1-n01", "r1-n02", "r2-n01", "r2-n02"]),
    ("a1,b[3],c", ["a1", "b3", "c"]),
])
def test_slurm_nodelist_expands(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("bad", ["node[01-03", "node[a-b]", "", "x[1-2]]"])
def test_slurm_nodelist_rejects_what_it_cannot_read(bad):
    with pytest.raises(ValueError):
        expand_nodelist(bad)


def test_default_workers_follow_affinity_and_slurm(monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    allowed = len(os.sched_getaffinity(0))
    assert usable_cpus() == allowed and default_workers(1) == allowed
    assert default_workers(allowed * 2) == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert usable_cpus() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "10")
    assert usable_cpus() == 10 and default_workers(2) == 5


# ---------------------------------------------------------------- schedules against DINO's utils.py


def dino_cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0):
    """DINO's utils.cosine_scheduler, transcribed (warmup_iters made an int for fractional epochs)."""
    warmup_schedule = np.array([])
    warmup_iters = int(warmup_epochs * niter_per_ep)
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
    schedule = np.concatenate((warmup_schedule, schedule))
    assert len(schedule) == epochs * niter_per_ep
    return schedule


@pytest.mark.parametrize("epochs,niter,warmup_epochs,world", [(100, 7, 10, 8), (5, 13, 1, 1), (4, 9, 0.5, 2),
                                                              (3, 10, 1.25, 1), (3, 10, 1.75, 1), (6, 5, 0, 4)])
def test_schedules_match_dino_value_for_value(epochs, niter, warmup_epochs, world):
    config = TrainConfig(shards=("x",), out="o", epochs=epochs, warmup_epochs=warmup_epochs, batch_size=6)
    ours = build_schedules(config, niter, world)
    lr = dino_cosine_scheduler(0.0005 * 6 * world / 256.0, 1e-5, epochs, niter, warmup_epochs=warmup_epochs)
    assert ours.total_steps == epochs * niter
    assert np.array_equal(ours.lr, lr)
    assert np.array_equal(ours.wd, dino_cosine_scheduler(0.04, 0.4, epochs, niter))
    assert np.array_equal(ours.momentum, dino_cosine_scheduler(0.996, 1, epochs, niter))
    warm = int(warmup_epochs * niter)
    if warm:
        assert ours.lr[warm - 1] == 0.0005 * 6 * world / 256.0  # the warm-up reaches the base value


def test_steps_mode_schedules_span_the_steps():
    config = TrainConfig(shards=("x",), out="o", steps=30, warmup_epochs=0.5)
    ours = build_schedules(config, 20, 1)
    assert ours.total_steps == 30 and len(ours.lr) == 30
    assert np.array_equal(ours.lr[:10], np.linspace(0, 0.0005 * 16 / 256, 10))
    assert ours.lr[-1] > 1e-5 and ours.momentum[-1] < 1.0  # the cosine's last value is one step before its end
    short = cosine_schedule(1.0, 0.0, total_steps=4, warmup_steps=10)  # a warm-up longer than the run
    assert short.tolist() == np.linspace(0, 1.0, 4).tolist()


def test_schedules_longer_than_the_steps_bound_are_refused_before_they_are_built():
    """--epochs 100000 x 1000 steps per epoch would build 10^8-long schedules (2.4 GB; --steps 10^9 once
    allowed 24 GB): a usage error naming the product, before any array exists."""
    from wtours.errors import EXIT_USAGE, UsageError

    with pytest.raises(UsageError) as info:
        build_schedules(TrainConfig(shards=("x",), out="o", epochs=100_000), 1000, 1)
    assert info.value.exit_code == EXIT_USAGE and "is 100000000 steps, more than" in info.value.message
    assert build_schedules(TrainConfig(shards=("x",), out="o", epochs=10_000), 1000, 1).total_steps == 10**7


# ---------------------------------------------------------------- settings: one declaration


def other_value(leaf):
    """A valid non-default command-line value for a TrainConfig field."""
    default = leaf.field.default
    choices = leaf.field.metadata.get("choices")
    if choices is not None:
        options = list(choices() if callable(choices) else choices)
        return next(c for c in options if c != default)
    kind = str(leaf.type)
    if "bool" in kind:
        return not default
    if "tuple" in kind:
        return ("walk", "other")
    if "int" in kind:
        return (default or 0) + 3
    if "float" in kind:
        value, allowed = (default or 0.0) + 0.125, leaf.field.metadata.get("range")
        return value if allowed is None or value in allowed else (default or 0.0) / 2
    return f"/tmp/{leaf.name}"


def as_args(leaf, value) -> list[str]:
    if isinstance(value, bool):
        return [leaf.option if value else f"--no-{leaf.option[2:]}"]
    if isinstance(value, tuple):
        return [w for v in value for w in (leaf.option, v)]
    return [leaf.option, str(value)]


def leaf_value(config, leaf):
    for part in leaf.path:
        config = getattr(config, part)
    return config


def test_every_train_setting_is_an_option():
    required = {"shards": ["--shards", "s"], "out": ["--out", "o"],  # and the evaluations take their folders
                "knn_train": ["--knn-train", "t"], "knn_val": ["--knn-val", "v"],
                "linear_train": ["--linear-train", "t"], "linear_val": ["--linear-val", "v"], "davis": ["--davis", "d"]}
    fields = leaves(TrainConfig)
    assert len(fields) > 40 and {"teacher_temp", "sinkhorn_iterations", "min_lr", "weight_decay_end"} <= \
        {f.name for f in fields}
    for leaf in fields:
        value = other_value(leaf)
        others = [w for name, words in required.items() if name != leaf.name for w in words]
        config = config_from_args([*others, *as_args(leaf, value)])
        if leaf.name == "knn_every":  # the deprecated name of --eval-every sets it
            assert (config.eval_every, config.knn_every) == (value, None)
            continue
        assert leaf_value(config, leaf) == value, leaf.name


def test_print_config_prints_yaml_that_config_reads_back_and_creates_nothing(tmp_path):
    """--print-config: the resolved settings (defaults, --config, --set and options merged), then exit 0 with
    nothing created; the YAML given to --config builds the same config."""
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"model": {"loss": {"teacher_temp": 0.06}}, "epochs": 7}))
    args = ["--shards", "walk", "--shards", "pipe:cat x.tar", "--out", str(tmp_path / "run"), "--config",
            str(tmp_path / "base.yaml"), "--set", "model.sinkhorn.sinkhorn_iterations=5", "--arch", "vit_tiny",
            "--davis", "DAVIS", "--davis-sequences", "bike", "--no-norm-last-layer", "--lr", "0.002"]
    printed = run_wtours(["train", *args, "--print-config"], cwd=tmp_path)
    assert printed.exit_code == 0, printed.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.yaml"]  # no run folder, no log
    (tmp_path / "printed.yaml").write_text(printed.stdout)
    expected = config_from_args(args)
    assert config_from_args(["--config", str(tmp_path / "printed.yaml")]) == expected
    assert expected.epochs == 7 and expected.model.loss.teacher_temp == 0.06 and expected.davis_sequences == ("bike",)


def test_train_help_groups_the_options_by_sub_config():
    """Each option once, under a heading: the model's by their sub-config (model.loss.* ...), the top config's
    by the command's table (no stale names in it)."""
    from wtours.cli.train_cmd import TRAIN_SECTIONS

    text = run_wtours(["train", "--help"]).output
    headings = [line for line in text.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert headings[0] == "Options:" and "Model loss options (model.loss.*):" in headings, headings
    assert len(headings) >= 8, headings
    names = {leaf.name for leaf in leaves(TrainConfig)}
    assert set(TRAIN_SECTIONS) <= names
    blocks = dict(zip(headings, re.split(r"^\S.*:$", text, flags=re.M)[1:], strict=True))
    for leaf in leaves(TrainConfig):
        where = [h for h, block in blocks.items() if re.search(rf"^  {leaf.option}(?=[\s/]|$)", block, flags=re.M)]
        expected = (f"{' '.join(leaf.path[:-1]).capitalize()} options ({'.'.join(leaf.path[:-1])}.*):"
                    if len(leaf.path) > 1 else f"{TRAIN_SECTIONS.get(leaf.name, 'Options')}:")
        assert where == [expected], (leaf.option, where)
    assert re.search(r"^  --print-config\b", blocks["Options:"], flags=re.M)


def test_yaml_and_set_build_the_same_config_as_the_options(tmp_path):
    flags = ["--shards", "walk", "--shards", "other", "--out", "runs/x", "--arch", "vit_tiny", "--out-dim", "512",
             "--teacher-temp", "0.07", "--warmup-teacher-temp-epochs", "30", "--min-lr", "1e-6", "--steps", "9",
             "--norm-last-layer", "--sinkhorn-iterations", "3", "--lr", "0.001"]
    settings = {"shards": ["walk", "other"], "out": "runs/x",
                "model": {"arch": "vit_tiny", "loss": {"teacher_temp": 0.07}},
                "warmup_teacher_temp_epochs": 30, "min_lr": "1e-6", "norm_last_layer": True}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(settings))
    sets = ["--set", "out_dim=512", "--set", "steps=9", "--set", "model.sinkhorn.sinkhorn_iterations=3",
            "--set", "lr=0.001"]
    from_file = config_from_args(["--config", str(tmp_path / "run.yaml"), *sets])
    assert from_file == config_from_args(flags)
    assert from_file.model.loss.teacher_temp == 0.07 and from_file.model.head.norm_last_layer
    # precedence: defaults < --config < --set < options
    assert config_from_args(["--config", str(tmp_path / "run.yaml"), "--set", "out_dim=256"]).model.out_dim == 256
    top = config_from_args(["--config", str(tmp_path / "run.yaml"), "--set", "out_dim=256", "--out-dim", "128",
                            "--no-norm-last-layer"])
    assert top.model.out_dim == 128 and not top.model.head.norm_last_layer and top.model.arch == "vit_tiny"


@pytest.mark.parametrize("args,message,hint", [
    (["--set", "teacher_tmp=0.1"], "unknown setting 'teacher_tmp'", "did you mean 'teacher_temp'"),
    (["--set", "epochs=ten"], "epochs: 'ten' is not an integer", "takes an integer"),
    (["--set", "compile=perhaps"], "compile: 'perhaps' is not true or false", ""),
    (["--set", "arch=vit_smal"], "--arch 'vit_smal' is not one of its choices", "did you mean 'vit_small'"),
    (["--set", "out_dim"], "is not KEY=VALUE", ""),
])
def test_unknown_or_ill_typed_settings_are_clear_errors(args, message, hint):
    with pytest.raises(WtoursError) as info:
        config_from_args(["--shards", "s", "--out", "o", *args])
    assert message in info.value.message and hint in (info.value.hint or "")


def test_a_bad_config_file_is_a_clear_cli_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("shards: [walk]\nout: runs/x\nmodel:\n  loss:\n    teacher_temperature: 0.07\n")
    result = run_wtours(["train", "--config", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"error: unknown setting 'teacher_temperature' in --config {path}" in result.output
    assert "hint: did you mean 'teacher_temp'" in result.output
    path.write_text("shards: [walk]\nout: runs/x\nmin_lr: [1]\n")
    result = run_wtours(["train", "--config", str(path)])
    assert "error: min_lr: [1] is not a number" in result.output


def test_schedules_and_optimiser_pieces():
    lr = cosine_schedule(1.0, 0.1, total_steps=20, warmup_steps=5)
    assert len(lr) == 20 and lr[0] == 0.0 and lr[4] == lr[5] == 1.0 and lr[-1] > 0.1  # DINO: base twice
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


def documented_authors_run() -> list[str]:
    """The options of docs/dora.md's "authors' published run" command, as a user copies them."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "dora.md").read_text()
    block = page.split("### The authors' published run", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    words = shlex.split(block.replace("\\\n", " "))
    assert words[:3] == ["torchrun", "--nproc-per-node", "8"], words
    return words[words.index("train") + 1:]


def test_the_documented_authors_run_makes_their_steps_and_breakpoints(tmp_path):
    """A video of known length (21 s at 10 fps: 210 frames), sharded at 2 fps: the documented command on 8
    processes makes the optimiser steps of the authors' main.py on that video, with their warm-up ends."""
    seconds, source_fps = 21, 10  # tests.videos.sharded_root's rate
    root = sharded_root(tmp_path, seconds=seconds, samples_per_shard=40)
    args = documented_authors_run()
    args[args.index("--shards") + 1], args[args.index("--out") + 1] = "walk", str(tmp_path / "run")
    config = config_from_args([*args, "--root", str(root), "--workers", "1"])
    ranks = 8
    # the authors' numbers, from their code (WTDataloader.py, main.py): a clip start per source frame but the
    # last frames x step_between_clips; DistributedSampler's ceil per rank; DataLoader(drop_last=True)
    step_between_clips = round(config.clip_stride * source_fps)
    clips = seconds * source_fps - config.clip_frames * step_between_clips
    steps_per_epoch = math.ceil(clips / ranks) // config.batch_size
    assert (clips, steps_per_epoch) == (130, 2)  # ... not the grid's 2 fps epoch (26 clips: no whole batch)
    (found,) = resolve_sets("walk", root)
    assert found.index.video.frames == found.index.source_frames == seconds * source_fps  # probed, in index.json
    older = dataclasses.replace(found.index, video=dataclasses.replace(found.index.video, frames=None))
    assert older.source_frames == round(found.index.video.duration * source_fps)  # before `frames` was recorded
    part = dataclasses.replace(found.index, params=dataclasses.replace(found.index.params, start=2.0, end=12.0))
    assert part.source_frames == 10 * source_fps  # a set of --start 2 --end 12: that part's frames

    dataset = build_data(config, Dist(world_size=ranks, local_world_size=ranks))
    schedules = build_schedules(config, len(dataset), ranks)
    assert dataset.clips_per_epoch() == clips and len(dataset) == steps_per_epoch
    assert schedules.total_steps == 100 * steps_per_epoch == config.epochs * steps_per_epoch
    assert schedules.breakpoints(config) == {"lr_warmup_steps": 10 * steps_per_epoch,
                                             "teacher_temp_warmup_steps": 30 * steps_per_epoch}
    base = 0.0005 * config.batch_size * ranks / 256
    warmup = 10 * steps_per_epoch
    assert schedules.lr[warmup - 1] == pytest.approx(base) and schedules.lr[warmup - 2] < base
    assert schedules.lr[warmup] == pytest.approx(base) and schedules.lr[warmup + 1] < base  # the cosine starts at base
    assert schedules.lr[-1] == pytest.approx(1e-5, rel=1e-3)
    assert config.model.loss.warmup_teacher_temp_epochs == 30 and config.precision == "fp16"
    assert (config.model.n_local, config.model.head.norm_last_layer, config.min_lr) == (6, False, 1e-5)


@pytest.mark.slow
def test_a_source_frames_run_records_the_authors_epoch(root, tmp_path):
    """run.json holds what --epoch-length source-frames implied: the authors' clip count and steps per epoch
    for the canonical 20 s, 10 fps video (200 frames), with the warm-up ends."""
    out = tmp_path / "run"
    result = run(["train", "--shards", "walk", "--root", str(root), "--out", str(out), *TINY,
                  "--epoch-length", "source-frames", "--steps", "2", "--warmup-epochs", "0.5"])
    assert result.returncode == 0, result.stderr
    facts = json.loads((out / "run.json").read_text())
    clips = 200 - 2 * 10  # 2 frames, 1 s = 10 source frames apart
    assert facts["clips_per_epoch"] == clips and facts["steps_per_epoch"] == clips // 2
    assert facts["epoch_length"] == "source-frames" and facts["lr_warmup_steps"] == 2  # int(0.5 x 90), cut to 2
    assert f"{clips} clips per epoch, {clips // 2} steps per epoch" in result.stdout + result.stderr
    subset = run(["train", "--shards", str(Layout(root).shard_dir("walk") / "walk-000000.tar"), "--out",
                  str(tmp_path / "subset"), *TINY, "--epoch-length", "source-frames", "--steps", "1"])
    assert subset.returncode == 2 and "names 1 of the 4 shards of walk" in subset.stderr
