"""What a training run reports: log.jsonl, TensorBoard events, the console's progress lines and the
per-rank data logs (data.rank<r>.jsonl: the clip keys of every step)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wtours import distributed
from wtours.layout import RUN_LOG_FILE, RUN_TENSORBOARD_DIR, run_data_log
from wtours.units import format_duration

log = logging.getLogger(__name__)


def problems_line(problems: dict) -> str | None:
    """The console's line about what the loader skipped (a `Problems.counts()`), None when nothing was."""
    if not (problems["bad_shards"] or problems["bad_samples"] or problems["bad_clips"]):
        return None
    shards = sorted(problems["bad_shards"])
    named = ", ".join(shards[:3]) + (", ..." if len(shards) > 3 else "")
    return (f"skipped: {len(shards)} unreadable shard(s)" + (f" ({named})" if shards else "")
            + f", {problems['bad_samples']} damaged sample(s), {problems['bad_clips']} clip(s) with a frame that "
            "does not decode (re-make damaged shards with wtours shard, or leave them out of --shards)")


@dataclass
class RunState:
    step: int = 0  # optimiser steps done
    epoch: int = 0
    step_in_epoch: int = 0
    saved_step: int | None = None  # the step of the last checkpoint written or resumed from


def progress_line(state: RunState, total_steps: int, loss: float, clips_per_s: float, eta: float | None,
                  warmup_seconds: float | None = None) -> str:
    """The console line of a logged step: step/total, epoch, loss, clips/s over the interval since the last
    line (all ranks), ETA; the warm-up step shows its own duration instead of a rate."""
    width = len(str(total_steps))
    rate = (f"first step {warmup_seconds:.1f} s (start-up, warm-up)" if warmup_seconds is not None
            else f"{clips_per_s:.1f} clips/s")
    eta_text = format_duration(eta, always_hours=False) if eta is not None else "?"
    when = "done" if state.step >= total_steps else f"ETA {eta_text}"
    return f"step {state.step:>{width}}/{total_steps}  epoch {state.epoch}  loss {loss:.4f}  {rate}  {when}"


class RunLogger:
    """log.jsonl lines, TensorBoard events and progress lines (rank 0, on the steps the loop logs; `say` is
    silenced by -q), and data.rank<r>.jsonl (clip keys). The process's first step (torch.compile, loader
    start-up, CUDA warm-up) is timed apart: left out of the clips/s of its interval and out of the ETA."""

    def __init__(self, out: Path, dist: distributed.Dist, total_steps: int = 0,
                 say: Callable[[str], None] = lambda m: None, clock: Callable[[], float] = time.perf_counter):
        self.dist, self.total_steps, self.say, self.clock = dist, total_steps, say, clock
        # line-buffered: each line is on disk once written, so a killed run keeps every step it logged
        self.log = open(out / RUN_LOG_FILE, "a", buffering=1, encoding="utf-8") if dist.is_main else None
        self.data = open(out / run_data_log(dist.rank), "a", buffering=1, encoding="utf-8")
        self.tb = _tensorboard(out) if dist.is_main else None
        self.window_start = self.clock()
        self.clips = 0
        self.data_seconds = 0.0
        self.losses: list[float] = []
        self.warm: tuple[int, float] | None = None  # (step, time) at the end of the process's first step

    def step(self, state: RunState, loss: float, optimizer: Any, momentum: float, data_seconds: float,
             keys: list[str], problems: dict | None = None) -> None:
        """One step; `problems` (what the loader skipped so far, all ranks: `Problems.counts()`) on logged steps."""
        self.data.write(json.dumps({"step": state.step, "epoch": state.epoch, "keys": keys}) + "\n")
        self.losses.append(loss)
        now = self.clock()
        warmup = self.warm is None
        if warmup:  # the process's first step: timed apart from the rate
            self.warm = (state.step, now)
            if problems is None:  # not logged: the next line's rate starts after it
                self.window_start = now
                return
        self.clips += len(keys)
        self.data_seconds += data_seconds
        if self.log is None or problems is None:
            return
        elapsed = max(now - self.window_start, 1e-9)
        record = {"step": state.step, "epoch": state.epoch, "loss": loss,
                  "loss_mean": sum(self.losses) / len(self.losses),
                  "lr": optimizer.param_groups[0]["lr"], "wd": optimizer.param_groups[0]["weight_decay"],
                  "momentum": momentum, "clips_per_s": self.clips * self.dist.world_size / elapsed,
                  "data_wait": self.data_seconds / elapsed, "bad_shards": len(problems["bad_shards"]),
                  "bad_samples": problems["bad_samples"], "bad_clips": problems["bad_clips"]}
        if problems["bad_shards"]:  # what the loader skipped so far (all workers and ranks)
            record["bad_shard_urls"] = sorted(problems["bad_shards"])
        self._write(record, state.step, ("loss", "lr", "wd", "momentum", "clips_per_s", "data_wait"), "train")
        self.say(progress_line(state, self.total_steps, loss, record["clips_per_s"], self.eta(state.step, now),
                               elapsed if warmup else None))
        self.window_start, self.clips, self.data_seconds, self.losses = now, 0, 0.0, []

    def eta(self, step: int, now: float) -> float | None:
        """Seconds left at the mean pace of the steps after the warm-up step (None: none timed yet)."""
        if self.warm is None or step <= self.warm[0]:
            return None
        return (self.total_steps - step) * (now - self.warm[1]) / (step - self.warm[0])

    def evaluation(self, state: RunState, name: str, figures: dict[str, Any]) -> None:
        """An evaluation during training (wtours/train/monitor.py): its own log.jsonl line, figures prefixed
        with its name (knn_top1), the floats also TensorBoard scalars (knn/top1)."""
        record = {"step": state.step, "epoch": state.epoch, **{f"{name}_{k}": v for k, v in figures.items()}}
        self._write(record, state.step, tuple(f"{name}_{k}" for k, v in figures.items() if isinstance(v, float)),
                    name)

    def _write(self, record: dict, step: int, scalars: tuple[str, ...], group: str) -> None:
        """A log.jsonl line and its `scalars` as TensorBoard's group/name."""
        if self.log is None:
            return
        self.log.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key in scalars:
                self.tb.add_scalar(f"{group}/{key.removeprefix(group + '_')}", record[key], step)

    def close(self) -> None:
        for file in (self.data, self.log, self.tb):
            if file is not None:
                file.close()


def _tensorboard(out: Path) -> Any:
    """A TensorBoard writer of out/tensorboard, or None (with a warning) where tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed: no event files (pip install tensorboard)")
        return None
    return SummaryWriter(str(out / RUN_TENSORBOARD_DIR))
