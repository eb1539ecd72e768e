"""Issue 15 for `wtours train`: nothing lost, nothing cryptic.

Faults are injected for real: `python -m wtours` subprocesses, real SIGKILL/SIGINT, two runs at once,
a truncated shard read by two loader workers, a diverging configuration, a full tmpfs and a read-only
remount. Each fault must end in `error:` + `hint:` (no traceback) and leave the earlier checkpoint
intact, no temporaries behind, and a run that a rerun completes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from tests.cli import CliResult, assert_clean_error, run_wtours, run_wtours_process, start_wtours
from wtours.cli.train_cmd import config_from_args
from wtours.config import leaves
from wtours.errors import UsageError
from wtours.locks import LOCK_FILE
from wtours.train.config import TrainConfig

TINY = ["--arch", "vit_micro", "--out-dim", "64", "--batch-size", "2", "--clip-frames", "2", "--n-local", "2",
        "--workers", "0", "--log-every", "1"]


@pytest.fixture(scope="module")
def root(canonical_roots, tmp_path_factory) -> Path:
    return canonical_roots.copy("walk-20s", tmp_path_factory.mktemp("faults") / "root")


def train_args(root: Path, out: Path, *more: str) -> list[str]:
    return ["train", "--shards", "walk", "--root", str(root), "--out", str(out), *TINY, *more]


def start(args: list[str]) -> subprocess.Popen:
    """A run to signal or kill: faulthandler shows where it was if it must be aborted."""
    return start_wtours(args, env={**os.environ, "PYTHONFAULTHANDLER": "1"})


@pytest.fixture(scope="module")
def base_run(root, tmp_path_factory) -> Path:
    """A finished 2-step run with a checkpoint at step 2 (tests work on copies)."""
    out = tmp_path_factory.mktemp("base") / "run"
    result = run_wtours_process(train_args(root, out, "--steps", "2", "--checkpoint-every", "1"))
    assert result.returncode == 0, result.stderr
    return out


def copy_run(base: Path, to: Path) -> Path:
    shutil.copytree(base, to, dirs_exist_ok=True)
    return to


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hashes(folder: Path) -> dict[str, str]:
    """Every file's checksum but the lock's (which records its last holder)."""
    return {str(p.relative_to(folder)): sha(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


def temporaries(folder: Path) -> list[Path]:
    return list(folder.glob(".*.tmp-*"))


def steps_logged(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]


def checkpoint_step(out: Path) -> int:
    return torch.load(out / "checkpoint.pth", weights_only=False, map_location="cpu")["step"]


def all_finite(out: Path) -> bool:
    checkpoint = torch.load(out / "checkpoint.pth", weights_only=False, map_location="cpu")
    tensors = [*checkpoint["student"].values(), *checkpoint["teacher"].values(), checkpoint["dora_loss"]["center"]]
    return all(bool(torch.isfinite(t.float()).all()) for t in tensors if t.is_floating_point())


def wait_for(predicate, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            pytest.fail(f"the run ended early: {process.returncode} {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("timed out waiting for the run")
        time.sleep(0.05)


def checkpointed_and_past(out: Path, step: int, checkpointed: bool = True):
    def ready() -> bool:
        try:
            checkpoint = (out / "checkpoint.pth").is_file() or not checkpointed
            return checkpoint and max(steps_logged(out), default=0) >= step
        except (OSError, ValueError):
            return False
    return ready


# ---------------------------------------------------------------- item 3: ranges and devices (fast)


def numeric_leaves():
    out = []
    for leaf in leaves(TrainConfig):  # the model's settings too
        base = leaf.type.__args__[0] if hasattr(leaf.type, "__args__") else leaf.type
        if base in (int, float):
            out.append(leaf)
    return out


def test_every_numeric_setting_declares_a_range_and_is_refused_outside_it():
    """Through --set (the options themselves: tests/test_cli_conventions.py): a UsageError naming the option."""
    assert len(numeric_leaves()) >= 25
    for leaf in numeric_leaves():
        allowed = leaf.field.metadata.get("range")
        assert allowed is not None, f"{leaf.name} declares no range"
        floats = ("nan", "inf") if float in (leaf.type, *getattr(leaf.type, "__args__", ())) else ()
        for bad in (allowed.low - 1 if allowed.low is not None else allowed.high + 1, *floats):
            with pytest.raises(UsageError) as info:
                config_from_args(["--shards", "s", "--out", "o", "--set", f"{leaf.name}={bad}"])
            assert info.value.message.startswith(f"{leaf.option} ") and info.value.hint, info.value.message


@pytest.mark.parametrize("args,message", [
    (["--lr", "-1"], "'--lr': -1 is out of range: it must be in (0, 1]"),
    (["--lr", "nan"], "'--lr': nan is not a finite number"),
    (["--lr", "inf"], "'--lr': inf is not a finite number"),
    (["--momentum-teacher", "1.5"], "'--momentum-teacher': 1.5 is out of range: it must be in [0, 1]"),
    (["--batch-size", "0"], "'--batch-size': 0 is out of range: it must be in [1, 65536]"),
    (["--warmup-epochs", "-0.5"], "'--warmup-epochs': -0.5 is out of range: it must be in [0, 100000]"),
    (["--resume", "--overwrite"], "--resume and --overwrite"),
    (["--device", "tpu"], "--device tpu"),
    (["--device", "cuda:7"], "--device cuda:7"),
])
def test_refused_options_create_nothing(root, tmp_path, args, message):
    if args == ["--device", "cuda:7"] and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    out = tmp_path / "run"
    result = run_wtours(train_args(root, out, "--steps", "1", *args))
    assert_clean_error(result, 2, kind=UsageError)
    assert message in result.stderr
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused_in_a_real_process(root, tmp_path):
    out = tmp_path / "run"
    stderr = assert_clean_error(run_wtours_process(train_args(root, out, "--steps", "1", "--device", "cuda")), 2)
    assert "no CUDA device" in stderr and "--device cpu" in stderr
    assert not out.exists()


# ---------------------------------------------------------------- item 1: an existing run


@pytest.mark.slow
def test_an_existing_run_is_refused_and_overwrite_removes_only_run_files(root, base_run, tmp_path):
    out = copy_run(base_run, tmp_path / "run")
    before = hashes(out)
    stderr = assert_clean_error(run_wtours_process(train_args(root, out, "--steps", "1")), 2)
    assert "already holds a training run" in stderr and "--resume" in stderr and "--overwrite" in stderr
    assert hashes(out) == before  # the step-2 checkpoint is not replaced by a step-1 one

    (out / "notes.txt").write_text("mine")
    result = run_wtours_process(train_args(root, out, "--steps", "1", "--overwrite"))
    assert result.returncode == 0, result.stderr
    assert checkpoint_step(out) == 1 and steps_logged(out) == [1]
    assert (out / "notes.txt").read_text() == "mine"  # not a run file: kept
    assert not temporaries(out)


# ---------------------------------------------------------------- items 2 and 8: two runs; kill -9


@pytest.mark.slow
def test_a_second_run_is_refused_and_a_killed_run_resumes(root, tmp_path):
    out = tmp_path / "run"
    args = train_args(root, out, "--steps", "14", "--checkpoint-every", "2")
    first = start(args)
    try:
        wait_for(checkpointed_and_past(out, 3), first)
        second = run_wtours_process([*args, "--resume"])
        stderr = assert_clean_error(second, 1)
        assert f"in use by pid {first.pid}" in stderr
        assert first.poll() is None, "the first run must still be running to be killed mid-run"
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        first.kill()
        first.wait(30)
    assert first.returncode == -signal.SIGKILL
    killed_at = checkpoint_step(out)  # a complete checkpoint (torch.load reads it whole)
    assert killed_at >= 2 and killed_at % 2 == 0 and all_finite(out)

    third = run_wtours_process([*args, "--resume"])  # the dead run's lock does not block it
    assert third.returncode == 0, third.stderr
    assert f"at step {killed_at}" in third.stdout
    assert steps_logged(out) == list(range(1, 15))  # each step logged once, the redone ones included
    data = [json.loads(line)["step"] for line in (out / "data.rank0.jsonl").read_text().splitlines()]
    assert data == list(range(1, 15))
    assert checkpoint_step(out) == 14 and not temporaries(out)


# ---------------------------------------------------------------- item 7: Ctrl-C


@pytest.mark.slow
def test_ctrl_c_exits_130_with_the_checkpoint_intact(root, tmp_path):
    out = tmp_path / "run"
    process = start(train_args(root, out, "--steps", "50", "--checkpoint-every", "2"))
    try:
        wait_for(checkpointed_and_past(out, 3), process)
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)  # faulthandler shows where it was
            pytest.fail(f"still running 5 minutes after SIGINT: {process.communicate()[1][-4000:]}")
    finally:
        process.kill()
    assert_clean_error(CliResult(process.returncode, "", stderr), 130)
    step = checkpoint_step(out)
    assert "interrupted at step" in stderr and "--resume" in stderr
    assert f"the checkpoint of step {step}" in stderr and all_finite(out)
    assert not temporaries(out)


# ---------------------------------------------------------------- item 5: a diverging run


DIVERGE = ["--resume", "--reschedule", "--steps", "6", "--lr", "1", "--warmup-epochs", "0", "--weight-decay", "1e18",
           "--weight-decay-end", "1e18", "--checkpoint-every", "1"]


@pytest.mark.slow
def test_a_diverging_run_keeps_the_last_finite_checkpoint_with_a_fitting_hint(root, base_run, tmp_path):
    """Step 3 still has a finite loss but its update blows the weights up (AdamW decay x 1e18, still finite): the
    checkpoint due after step 3 must not be written, and the step-2 one stays."""
    out = copy_run(base_run, tmp_path / "run")
    good = sha(out / "checkpoint.pth")
    stderr = assert_clean_error(run_wtours_process(train_args(root, out, *DIVERGE)), 4)
    assert "is nan" in stderr or "not finite" in stderr or "is inf" in stderr
    assert sha(out / "checkpoint.pth") == good and checkpoint_step(out) == 2 and all_finite(out)
    assert "(step 2)" in stderr and "--resume --reschedule" in stderr
    assert "fp32 already" in stderr and "--precision fp32" not in stderr  # the run is fp32

    stderr = assert_clean_error(run_wtours_process(train_args(root, out, *DIVERGE, "--precision", "bf16")), 4)
    assert "--precision fp32" in stderr
    assert sha(out / "checkpoint.pth") == good and not temporaries(out)


# ---------------------------------------------------------------- item 6: resume with other settings


@pytest.mark.slow
def test_resume_with_other_schedule_settings_is_refused_unless_rescheduled(root, base_run, tmp_path):
    out = copy_run(base_run, tmp_path / "run")
    before = hashes(out)
    changed = train_args(root, out, "--resume", "--steps", "4", "--batch-size", "4", "--lr", "0.001")
    stderr = assert_clean_error(run_wtours_process(changed), 2)
    assert "--steps 2 -> 4" in stderr and "--batch-size 2 -> 4" in stderr and "--lr None -> 0.001" in stderr
    assert "--reschedule" in stderr and "config.json" in stderr
    assert hashes(out) == before

    result = run_wtours_process(train_args(root, out, "--resume", "--reschedule", "--steps", "3"))
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "run.json").read_text())["reschedules"] == [
        {"step": 2, "changed": {"steps": [2, 3], "total_steps": [2, 3]}}]
    assert steps_logged(out) == [1, 2, 3]


# ---------------------------------------------------------------- item 4: skipped shards, loader workers


@pytest.mark.slow
def test_a_truncated_shard_read_by_loader_workers_is_counted_and_reported(root, tmp_path):
    damaged = tmp_path / "root"
    shutil.copytree(root, damaged, symlinks=True)
    shard = damaged / "shards" / "walk" / "walk-000001.tar"
    with open(shard, "r+b") as f:
        f.truncate(1024)
    out = tmp_path / "run"
    args = ["train", "--shards", "walk", "--root", str(damaged), "--out", str(out), *TINY, "--workers", "2",
            "--clips-per-shard", "1", "--steps", "2"]
    result = run_wtours_process(args)
    assert result.returncode == 0, result.stderr
    assert "skipped: 1 unreadable shard(s)" in result.stdout and "walk-000001.tar" in result.stdout
    last = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][-1]
    assert last["step"] == 2 and last["bad_shards"] == 1 and last["bad_samples"] == 0
    assert [Path(u).name for u in last["bad_shard_urls"]] == ["walk-000001.tar"]


# ---------------------------------------------------------------- item 9: full disk, read-only folder


@pytest.mark.slow
def test_a_full_disk_is_a_clear_error_that_keeps_the_checkpoint_and_resumes(root, base_run, tmpfs):
    size = (base_run / "checkpoint.pth").stat().st_size
    disk = tmpfs(int(size * 2.6))
    out = copy_run(base_run, disk / "run")
    filler = disk / "filler"
    filler.write_bytes(b"\0" * size)  # the next checkpoint does not fit beside the current one
    good = sha(out / "checkpoint.pth")
    args = train_args(root, out, "--resume", "--reschedule", "--steps", "3")
    stderr = assert_clean_error(run_wtours_process(args), 1)
    assert "No space left on device" in stderr and "disk is full" in stderr
    assert sha(out / "checkpoint.pth") == good and not temporaries(out)

    filler.unlink()
    result = run_wtours_process(args)  # the rerun completes
    assert result.returncode == 0, result.stderr
    assert checkpoint_step(out) == 3 and not temporaries(out)


@pytest.mark.slow
def test_a_read_only_run_folder_is_a_clear_error(root, base_run, tmpfs):
    size = (base_run / "checkpoint.pth").stat().st_size
    disk = tmpfs(int(size * 1.5))
    out = copy_run(base_run, disk / "run")
    before = hashes(out)
    done = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only: {done.stderr.strip()}")
    stderr = assert_clean_error(run_wtours_process(train_args(root, out, "--resume", "--steps", "2")), 1)
    assert "Read-only file system" in stderr and "writable" in stderr
    assert hashes(out) == before


def test_config_json_never_records_one_invocations_actions():
    """--resume/--overwrite/--reschedule act once: a run's config.json rerun with --config does not wipe it."""
    from wtours.train.folder import recorded as _recorded

    config = config_from_args(["--shards", "s", "--out", "o", "--resume", "--reschedule"])
    recorded = _recorded(config)
    assert not recorded["resume"] and not recorded["overwrite"] and not recorded["reschedule"]
    assert dataclasses.replace(config, resume=False, reschedule=False).to_dict() == recorded


@pytest.mark.slow
def test_a_refusal_on_rank_0_stops_every_torchrun_process(root, base_run, tmp_path):
    """Rank 0 holds the lock and decides; the other rank gets its error instead of waiting forever."""
    from tests.test_train import child_env, free_port

    out = copy_run(base_run, tmp_path / "run")
    before = hashes(out)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), "-m", "wtours", *train_args(root, out, "--steps", "1")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=child_env())
    assert result.returncode != 0
    assert result.stderr.count("error: ") >= 2 and result.stderr.count("already holds a training run") == 2
    assert hashes(out) == before


def test_the_worker_count_is_kept_on_resume_and_another_one_is_a_change(tmp_path):
    """Each loader worker reads its own stretch of the epoch, so the worker count decides which clips form
    each batch: a resume without --workers takes the run's, and another count is a setting that changed."""
    from wtours.train.folder import changes, flat_settings
    from wtours.train.folder import saved_workers as _saved_workers

    run = config_from_args(["--shards", "x", "--out", str(tmp_path), "--workers", "0"])
    saved = flat_settings(dataclasses.asdict(run))
    (tmp_path / "config.json").write_text(json.dumps(saved))
    resumed = config_from_args(["--shards", "x", "--out", str(tmp_path), "--resume"])
    assert resumed.workers is None and _saved_workers(resumed) == 0
    assert _saved_workers(dataclasses.replace(resumed, resume=False)) is None
    now = flat_settings(dataclasses.asdict(dataclasses.replace(resumed, workers=4)))
    assert changes(saved, now) == {"workers": [0, 4]}


# ---------------------------------------------------------------- issue 23: preemption (SIGTERM, SIGUSR1)

# The command the sbatch example of docs/getting-started.md runs each time its job starts: always --resume.
PREEMPTED = ["--workers", "2", "--batch-size", "4", "--steps", "12", "--checkpoint-every", "1000", "--resume"]


def test_stop_signals_raise_or_are_recorded_and_the_handlers_come_back():
    from wtours import stop

    before = [signal.getsignal(s) for s in stop.SIGNALS]
    with stop.handled(), pytest.raises(stop.Stopped) as stopped:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(5)  # the handler raises first
    assert stopped.value.signum == signal.SIGUSR1 and isinstance(stopped.value, KeyboardInterrupt)
    with stop.handled(), stop.handled(defer=True):
        assert stop.requested() is None
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.requested() == signal.SIGTERM  # the first one
    assert [signal.getsignal(s) for s in stop.SIGNALS] == before


def damage_every_shard(root: Path) -> None:
    """In each shard, in place (sizes and offsets unchanged): one sample's JSON broken, and in the second one
    frame's JPEG overwritten, so the loader's problem counts (damaged samples) grow through a run."""
    for number, shard in enumerate(sorted((root / "shards" / "walk").glob("*.tar"))):
        with tarfile.open(shard) as tar:
            where = {member.name: member.offset_data for member in tar}
        keys = sorted({name.split(".")[0] for name in where})
        with open(shard, "r+b") as f:
            f.seek(where[f"{keys[3]}.json"])
            f.write(b"x")
            if number == 1:
                f.seek(where[f"{keys[7]}.jpg"])
                f.write(b"\0\0")


def signalled(process: subprocess.Popen, out: Path, after: int, sig: signal.Signals, group: bool) -> str:
    """Send `sig` once `out` logged step `after` (to the process group: the loader workers get it too, as SLURM
    signals every process of a step); the run's stderr."""
    wait_for(checkpointed_and_past(out, after, checkpointed=False), process)
    (os.killpg if group else os.kill)(process.pid, sig)
    try:
        return process.communicate(timeout=300)[1]
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"still running 5 minutes after {sig.name}: {process.communicate()[1][-3000:]}")


def assert_stopped_with_checkpoint(out: Path, code: int, stderr: str, sig: signal.Signals, after: int,
                                   *data_logs: str) -> int:
    """Exit 143, the message naming the signal and the step, whose checkpoint is written; each rank logged up
    to that step exactly. Returns the step."""
    step = checkpoint_step(out)
    assert_clean_error(CliResult(code, "", stderr), 143, f"stopped by {sig.name} after step {step}")
    assert f"rerun with --resume to continue from step {step}" in stderr
    assert step >= after and all_finite(out) and not temporaries(out)
    for name in data_logs:
        assert [json.loads(line)["step"] for line in (out / name).read_text().splitlines()][-1] == step
    return step


def same_run(a: Path, b: Path) -> None:
    """Bit-identical checkpoints (weights, centre, optimiser, problem counts), log lines and clip keys."""
    first, second = (torch.load(out / "checkpoint.pth", weights_only=False) for out in (a, b))
    for net in ("student", "teacher"):
        assert first[net].keys() == second[net].keys()
        assert all(torch.equal(first[net][k], second[net][k]) for k in first[net]), net
    assert torch.equal(first["dora_loss"]["center"], second["dora_loss"]["center"])
    moments = [(s["exp_avg"], s["exp_avg_sq"]) for c in (first, second) for s in c["optimizer"]["state"].values()]
    half = len(moments) // 2
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(moments[:half], moments[half:]))
    assert first["problems"] == second["problems"] and first["step"] == second["step"]
    kept = ("step", "epoch", "loss", "lr", "bad_shards", "bad_samples", "bad_clips")
    lines = [[{k: r[k] for k in kept} for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())]
             for out in (a, b)]
    assert lines[0] == lines[1]
    for data in sorted(a.glob("data.rank*.jsonl")):
        assert data.read_text() == (b / data.name).read_text()


@pytest.mark.slow
def test_sigterm_and_sigusr1_checkpoint_at_a_step_and_the_resumed_run_is_bit_identical(root, tmp_path):
    """The same command each time, as a requeued job runs it: stopped by SIGTERM to every process (workers
    included), then by SIGUSR1 to the training process alone, then run to its end: the weights, the loader's
    problem counts, the losses and the clips equal an uninterrupted run's, bit for bit."""
    data = shutil.copytree(root, tmp_path / "root", symlinks=True)
    damage_every_shard(data)
    whole, split = tmp_path / "whole", tmp_path / "split"
    done = run_wtours_process(train_args(data, whole, *PREEMPTED))
    assert done.returncode == 0, done.stderr
    for sig, after, group in ((signal.SIGTERM, 3, True), (signal.SIGUSR1, 7, False)):
        process = start_wtours(train_args(data, split, *PREEMPTED), start_new_session=True)
        stderr = signalled(process, split, after, sig, group)
        assert_stopped_with_checkpoint(split, process.returncode, stderr, sig, after, "data.rank0.jsonl")
    final = run_wtours_process(train_args(data, split, *PREEMPTED))
    assert final.returncode == 0 and "resumed from" in final.stdout, final.stderr
    assert torch.load(split / "checkpoint.pth", weights_only=False)["problems"]["bad_samples"] > 0
    same_run(whole, split)


@pytest.mark.slow
def test_a_stop_signal_to_one_rank_or_to_all_stops_every_rank_at_one_step(root, tmp_path):
    """Two processes as srun starts them (gloo on CPU): SIGUSR1 to rank 1 alone, then SIGTERM to both; each time
    both ranks stop after the same step with its checkpoint, and the resumed run ends as an uninterrupted one."""
    from tests.test_train import child_env, free_port

    def ranks(out: Path) -> list[subprocess.Popen]:
        port = str(free_port())
        return [start_wtours(train_args(root, out, "--steps", "12", "--checkpoint-every", "1000", "--resume"),
                             env=child_env(SLURM_PROCID=str(r), SLURM_NTASKS="2", SLURM_LOCALID=str(r),
                                           SLURM_NODELIST="localhost", SLURM_JOB_ID="1", MASTER_PORT=port))
                for r in range(2)]

    def finish(processes: list[subprocess.Popen]) -> list[str]:
        try:
            return [p.communicate(timeout=300)[1] for p in processes]
        finally:
            for p in processes:
                p.kill()

    whole, split = tmp_path / "whole", tmp_path / "split"
    uninterrupted = ranks(whole)
    errors = finish(uninterrupted)
    assert [p.returncode for p in uninterrupted] == [0, 0], errors
    for sig, after, targets in ((signal.SIGUSR1, 3, [1]), (signal.SIGTERM, 7, [0, 1])):
        processes = ranks(split)
        try:
            wait_for(checkpointed_and_past(split, after, checkpointed=False), processes[0])
            for r in targets:
                processes[r].send_signal(sig)
        finally:
            errors = finish(processes)
        for process, stderr in zip(processes, errors):
            assert_stopped_with_checkpoint(split, process.returncode, stderr, sig, after, "data.rank0.jsonl",
                                           "data.rank1.jsonl")
    last = ranks(split)
    errors = finish(last)
    assert [p.returncode for p in last] == [0, 0], errors
    same_run(whole, split)


@pytest.mark.parametrize("status,requeued", [(143, True), (0, False), (1, False)])
def test_the_sbatch_example_requeues_itself_only_when_stopped_with_a_checkpoint(tmp_path, status, requeued):
    """docs/getting-started.md's train.sbatch, run by bash as SLURM runs it, with an `srun` that exits as `wtours
    train` would (143: stopped by a stop signal with a checkpoint) and an `scontrol` that records its arguments.
    What it runs each time is `wtours train ... --resume`: the test above reruns exactly that."""
    text = (Path(__file__).parents[1] / "docs" / "getting-started.md").read_text()
    script = re.search(r"```bash\n(#!/bin/bash\n#SBATCH.*?)```", text, re.S)
    assert script and "#SBATCH --requeue" in script[1] and "#SBATCH --signal=USR1@" in script[1]
    (tmp_path / "train.sbatch").write_text(script[1])
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "activate").write_text("")
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    for name, body in (("srun", f'echo "$@" >> {tmp_path}/srun.calls; exit {status}'),
                       ("scontrol", f'echo "$@" >> {tmp_path}/scontrol.calls')):
        (fakes / name).write_text(f"#!/bin/bash\n{body}\n")
        (fakes / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{fakes}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    done = subprocess.run(["bash", "train.sbatch"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == status, done.stderr
    ran = (tmp_path / "srun.calls").read_text().split()
    assert ran[:2] == ["wtours", "train"] and "--resume" in ran
    calls = tmp_path / "scontrol.calls"
    assert (calls.read_text().split() if calls.exists() else []) == (["requeue", "4242"] if requeued else [])
