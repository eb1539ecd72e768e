"""`wtours train` progress: a line per --log-every on rank 0 (step/total, epoch, loss, clips/s, ETA), -q
silences it, and the first step (compile, loader start-up) does not spoil the rate or the ETA."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tests.cli import run_wtours
from wtours import distributed
from wtours.train.logger import RunLogger as _RunLogger
from wtours.train.logger import RunState

MICRO = ["--arch", "vit_micro", "--out-dim", "64", "--batch-size", "2", "--clip-frames", "2", "--n-local", "2",
         "--workers", "0", "--device", "cpu"]
LINE = re.compile(r"^step +(\d+)/(\d+)  epoch (\d+)  loss (\S+)  (.*)  (ETA \S+|done)$")


@pytest.fixture(scope="module")
def root(canonical_roots, tmp_path_factory) -> Path:
    return canonical_roots.copy("walk-8s", tmp_path_factory.mktemp("progress") / "root")


def progress_lines(output: str) -> list[re.Match]:
    return [m for line in output.splitlines() if (m := LINE.match(line))]


@pytest.mark.slow
def test_train_prints_a_progress_line_per_log_every(root, tmp_path):
    out = tmp_path / "run"
    result = run_wtours(["train", "--shards", "walk", "--root", str(root), "--out", str(out),
                         "--steps", "5", "--log-every", "2", *MICRO])
    assert result.exit_code == 0, result.output
    lines = progress_lines(result.output)
    assert [int(m.group(1)) for m in lines] == [1, 2, 4, 5]  # the first, every 2nd and the last step
    assert {int(m.group(2)) for m in lines} == {5}
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 4, 5]
    for match, record in zip(lines, logged, strict=True):  # the console shows what log.jsonl records
        assert int(match.group(3)) == record["epoch"]
        assert float(match.group(4)) == pytest.approx(record["loss"], abs=1e-4)
    assert "first step" in lines[0].group(5) and lines[0].group(6) == "ETA ?"  # the warm-up step: no rate
    for match, record in zip(lines[1:], logged[1:], strict=True):
        assert float(match.group(5).split()[0]) == pytest.approx(record["clips_per_s"], rel=0.06, abs=0.06)
    assert lines[1].group(6).startswith("ETA ") and re.fullmatch(r"ETA \d+:\d\d", lines[1].group(6))
    assert lines[-1].group(6) == "done"
    assert result.output.index("training vit_micro") < result.output.index("step 1/5")  # while it runs


@pytest.mark.slow
def test_quiet_silences_the_progress_lines(root, tmp_path):
    result = run_wtours(["train", "--shards", "walk", "--root", str(root), "--out", str(tmp_path / "q"),
                         "--steps", "2", "--log-every", "1", "-q", *MICRO])
    assert result.exit_code == 0, result.output
    assert progress_lines(result.output) == [] and "step" not in result.output
    assert len((tmp_path / "q" / "log.jsonl").read_text().splitlines()) == 2  # log.jsonl is kept


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Optimizer:
    param_groups = [{"lr": 1e-4, "weight_decay": 0.04}]


def run_steps(tmp_path: Path, first: int, total: int, every: int, warmup_s: float, step_s: float) -> list[str]:
    """A logger driven as the loop drives it: a slow first step, then steps of `step_s` seconds of 4 clips."""
    said: list[str] = []
    clock = Clock()
    logger = _RunLogger(tmp_path, distributed.Dist(0, 1, 0, torch.device("cpu")), total, said.append, clock)
    state = RunState(step=first)
    try:
        for step in range(first + 1, total + 1):
            clock.now += warmup_s if step == first + 1 else step_s
            state.step = step
            logged = step % every == 0 or step in (1, total)
            logger.step(state, 1.0, Optimizer(), 0.996, 0.0, ["k"] * 4, {"bad_shards": {}, "bad_samples": 0,
                                                                          "bad_clips": 0} if logged else None)
    finally:
        logger.close()
    return said


def test_a_slow_first_step_spoils_neither_rate_nor_eta(tmp_path):
    said = run_steps(tmp_path, first=0, total=100, every=10, warmup_s=60.0, step_s=0.5)
    assert said[0].startswith("step   1/100") and "first step 60.0 s" in said[0] and said[0].endswith("ETA ?")
    assert said[1].startswith("step  10/100") and "8.0 clips/s" in said[1]  # 9 steps x 4 clips in 4.5 s
    assert said[1].endswith("ETA 0:45")  # 90 steps left at 0.5 s
    assert said[-1].startswith("step 100/100") and said[-1].endswith("done")
    assert len(said) == 11


def test_a_resumed_run_times_its_first_step_apart(tmp_path):
    """After --resume the first step is not a logged one: it is still left out of the next line's rate."""
    said = run_steps(tmp_path, first=40, total=100, every=10, warmup_s=30.0, step_s=0.2)
    assert said[0].startswith("step  50/100") and "20.0 clips/s" in said[0]  # steps 42-50: 36 clips in 1.8 s
    assert said[0].endswith("ETA 0:10")  # 50 steps left at 0.2 s
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert logged[0]["step"] == 50 and logged[0]["clips_per_s"] == pytest.approx(20.0)
