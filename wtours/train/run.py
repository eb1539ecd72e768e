"""The training loop: data, model, optimiser and schedules built by small functions, then steps."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from wtours.clips.augment import MultiCropConfig
from wtours.clips.epoch import ClipConfig
from wtours.clips.pipeline import ClipDataset, GpuAugmenter, LoaderConfig, make_loader
from wtours.clips.spec import resolve
from wtours.dora import DoRA
from wtours.errors import WtoursError
from wtours.layout import write_json_atomic
from wtours.system import default_workers
from wtours.train import distributed
from wtours.train.checkpoint import CHECKPOINT_FILE, latest_checkpoint, load_checkpoint, save_checkpoint
from wtours.train.config import TrainConfig
from wtours.train.optim import (
    cancel_last_layer_gradients,
    clip_per_tensor,
    cosine_schedule,
    ema_update,
    param_groups,
    warmup_iterations,
)

log = logging.getLogger(__name__)


class NonFiniteLoss(WtoursError):
    exit_code = 4


@dataclass
class Schedules:
    lr: Any
    wd: Any
    momentum: Any
    steps_per_epoch: int
    total_steps: int


@dataclass
class RunState:
    step: int = 0  # optimiser steps done
    epoch: int = 0
    step_in_epoch: int = 0


def build_data(config: TrainConfig, dist: distributed.Dist) -> ClipDataset:
    shards = resolve(config.shards, config.root)
    loader = LoaderConfig(batch_size=config.batch_size, workers=config.workers, shuffle_buffer=config.shuffle_buffer,
                          augment=config.augment,
                          clip=ClipConfig(config.clip_frames, config.clip_stride, config.clips_per_shard, config.seed),
                          multicrop=MultiCropConfig(n_local=config.model.n_local))
    return ClipDataset(shards, loader, rank=dist.rank, world_size=dist.world_size)


def build_model(config: TrainConfig, device: torch.device) -> DoRA:
    model = DoRA(config.model)
    if config.init_from:
        model.load_official_checkpoint(config.init_from)
    return model.to(device)


def build_schedules(config: TrainConfig, steps_per_epoch: int, world_size: int) -> Schedules:
    """DINO's main_dino.py schedules, per iteration; --steps replaces epochs x steps per epoch as
    their length (the warm-up still counts int(warmup_epochs x steps_per_epoch) iterations)."""
    total = config.steps or config.epochs * steps_per_epoch
    base_lr = config.lr if config.lr is not None else 0.0005 * config.batch_size * world_size / 256
    warmup = warmup_iterations(config.warmup_epochs, steps_per_epoch)
    return Schedules(
        lr=cosine_schedule(base_lr, config.min_lr, total, warmup),
        wd=cosine_schedule(config.weight_decay, config.weight_decay_end, total),
        momentum=cosine_schedule(config.momentum_teacher, 1.0, total),
        steps_per_epoch=steps_per_epoch, total_steps=total)


def precision_of(config: TrainConfig, device: torch.device) -> str:
    return config.precision or ("bf16" if device.type == "cuda" else "fp32")


def train(config: TrainConfig, say: Callable[[str], None] = print) -> RunState:
    dist = distributed.setup(config.device)
    if config.workers is None:  # resolved here, so config.json records what ran
        config = replace(config, workers=default_workers(dist.local_world_size))
    try:
        return _train(config, dist, say if dist.is_main else (lambda m: None))
    finally:
        distributed.teardown()


def _train(config: TrainConfig, dist: distributed.Dist, say: Callable[[str], None]) -> RunState:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = build_data(config, dist)
    steps_per_epoch = len(dataset)
    torch.manual_seed(config.seed)  # the same initial weights on every rank: the teacher is not DDP-synced
    model = build_model(config, dist.device)
    torch.manual_seed(config.seed + dist.rank)  # then each rank its own heads and dropout
    if config.compile:  # compiled graphs run the same modules: state-dict names do not change
        model.student.backbone.forward = torch.compile(model.student.backbone.forward)
        model.teacher.backbone.forward_last_attention = torch.compile(model.teacher.backbone.forward_last_attention)
    student = model.student
    if dist.world_size > 1:
        student = torch.nn.parallel.DistributedDataParallel(
            model.student, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(param_groups(model.student))
    precision = precision_of(config, dist.device)
    scaler = torch.amp.GradScaler(dist.device.type, enabled=precision == "fp16")
    schedules = build_schedules(config, steps_per_epoch, dist.world_size)
    state = RunState()
    if config.resume:
        state = _resume(out, model, optimizer, scaler, say)
    if dist.is_main:  # config.json is the config itself (--config reads it back); run.json what it implied
        write_json_atomic(out / "config.json", config.to_dict())
        write_json_atomic(out / "run.json", {"steps_per_epoch": steps_per_epoch, "total_steps": schedules.total_steps,
                                              "precision": precision, "world_size": dist.world_size,
                                              "workers": config.workers, "clips_per_epoch": dataset.clips_per_epoch()})
    say(f"training {config.model.arch} on {len(dataset.shards)} shards: {dataset.clips_per_epoch()} clips per epoch, "
        f"{steps_per_epoch} steps per epoch x {dist.world_size} process(es), {schedules.total_steps} steps, "
        f"{precision} on {dist.device}")
    logger = _RunLogger(out, dist, config.log_every)
    knn = _knn_monitor(config, dist)  # k-NN monitoring (--knn-train/--knn-val): folders checked now
    gpu_augment = GpuAugmenter(dataset.config.multicrop, dist.device) if config.augment == "gpu" else None
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    try:
        while state.step < schedules.total_steps:
            dataset.set_epoch(state.epoch, skip_batches=state.step_in_epoch)
            if gpu_augment is not None:
                gpu_augment.reseed(config.seed, state.epoch, dist.rank, state.step_in_epoch)
            waited = time.perf_counter()
            for batch in make_loader(dataset, pin_memory=dist.device.type == "cuda"):
                data_seconds = time.perf_counter() - waited
                # the CPU path sends uint8 views: normalised on the device, after the (4x smaller) copy
                crops = (gpu_augment(batch) if gpu_augment is not None
                         else batch.to(dist.device, non_blocking=True).normalised())
                it = state.step
                loss_value, output = train_step(
                    model, student, list(crops), optimizer, scaler, StepSettings(
                        float(schedules.lr[it]), float(schedules.wd[it]), float(schedules.momentum[it]),
                        state.epoch, config.clip_grad, config.freeze_last_layer, autocast_dtype))
                if not math.isfinite(loss_value):
                    raise NonFiniteLoss(
                        f"the loss is {loss_value} at step {state.step + 1}; training stopped",
                        f"the last good checkpoint is {out / CHECKPOINT_FILE}; resume with a lower --lr, "
                        "or --precision fp32")
                state.step += 1
                state.step_in_epoch += 1
                logger.step(state, loss_value, optimizer, float(schedules.momentum[it]), data_seconds, batch.keys)
                if dist.is_main and (state.step % config.checkpoint_every == 0 or state.step == schedules.total_steps):
                    _save(out, model, optimizer, scaler, state, config)
                _knn_evaluate(knn, model, state, schedules, logger, dist.device, say)
                if state.step >= schedules.total_steps:
                    break
                waited = time.perf_counter()
            else:
                state.epoch += 1
                state.step_in_epoch = 0
    finally:
        logger.close()
    say(f"done: {state.step} steps; checkpoint {out / CHECKPOINT_FILE}; log {out / 'log.jsonl'}")
    return state


@dataclass(frozen=True)
class StepSettings:
    lr: float
    weight_decay: float
    momentum: float  # teacher EMA
    epoch: int
    clip_grad: float = 3.0
    freeze_last_layer: int = 1
    autocast_dtype: torch.dtype | None = None  # None: fp32


def train_step(model: DoRA, student: torch.nn.Module, crops: list[torch.Tensor], optimizer, scaler,
               settings: StepSettings) -> tuple[float, Any]:
    """One DoRA step: loss, backward, per-tensor clipping, last-layer freeze, AdamW, EMA, centre.

    Returns the loss as a float (the step's one host sync) and the model output. A non-finite loss
    is returned before anything is updated."""
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = settings.lr
        if i == 0:
            group["weight_decay"] = settings.weight_decay
    device_type = crops[0].device.type
    with torch.autocast(device_type, dtype=settings.autocast_dtype or torch.float32,
                        enabled=settings.autocast_dtype is not None):
        output = model(crops, student=student, epoch=settings.epoch)
    loss = output.loss.detach()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        loss = loss.clone()  # every rank must see a non-finite loss, or the others hang in backward
        torch.distributed.all_reduce(loss)
        loss /= torch.distributed.get_world_size()
    loss_value = loss.item()
    if not math.isfinite(loss_value):
        return loss_value, output
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(output.loss).backward()
    scaler.unscale_(optimizer)
    params = list(model.student.parameters())
    if settings.clip_grad:  # DINO: `if args.clip_grad:` (0 turns clipping off)
        clip_per_tensor(params, settings.clip_grad)
    cancel_last_layer_gradients(model.student, settings.epoch, settings.freeze_last_layer)
    scaler.step(optimizer)
    scaler.update()
    ema_update(list(model.teacher.parameters()), params, settings.momentum)
    model.loss.update_center(output.teacher)
    return loss_value, output


def _save(out: Path, model: DoRA, optimizer, scaler, state: RunState, config: TrainConfig) -> None:
    save_checkpoint(out / CHECKPOINT_FILE, {
        "student": model.student.state_dict(), "teacher": model.teacher.state_dict(),
        "dora_loss": {"center": model.loss.center}, "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(), "step": state.step, "epoch": state.epoch,
        "step_in_epoch": state.step_in_epoch, "arch": config.model.arch, "out_dim": config.model.out_dim,
        "config": config.to_dict()})


def _resume(out: Path, model: DoRA, optimizer, scaler, say: Callable[[str], None]) -> RunState:
    path = latest_checkpoint(out)
    if path is None:
        say(f"--resume: no checkpoint in {out}; starting from scratch")
        return RunState()
    checkpoint = load_checkpoint(path)
    model.load_official_checkpoint(checkpoint)
    optimizer.load_state_dict(checkpoint["optimizer"])
    scaler.load_state_dict(checkpoint["scaler"])
    state = RunState(checkpoint["step"], checkpoint["epoch"], checkpoint["step_in_epoch"])
    say(f"resumed from {path} at step {state.step} (epoch {state.epoch}, batch {state.step_in_epoch})")
    return state


# ---------------------------------------------------------------- k-NN monitoring (wtours.eval)


def _knn_monitor(config: TrainConfig, dist: distributed.Dist):
    """A KnnMonitor on rank 0 when --knn-train/--knn-val are given, else None."""
    if not config.knn_train or not dist.is_main:
        return None
    from wtours.eval.knn import KnnConfig, KnnMonitor

    return KnnMonitor(config.knn_train, config.knn_val, config.knn_every, KnnConfig(workers=min(config.workers, 4)))


def _knn_evaluate(knn, model: DoRA, state: RunState, schedules: Schedules, logger: "_RunLogger", device,
                  say: Callable[[str], None]) -> None:
    """After the last step of every --knn-every-th epoch and of the run: the teacher backbone's k-NN, logged."""
    if knn is None:
        return
    epochs_done = state.epoch + 1 if state.step_in_epoch == schedules.steps_per_epoch else None
    if knn.due(epochs_done, run_over=state.step == schedules.total_steps):
        from wtours.eval.knn import result_line

        result = knn.evaluate(model.teacher.backbone, device)
        logger.knn(state, result.top1, result.top5)
        say(f"step {state.step}: {result_line(result)}")


class _RunLogger:
    """log.jsonl (every log_every steps), TensorBoard events (rank 0), and data.rank<r>.jsonl (clip keys)."""

    def __init__(self, out: Path, dist: distributed.Dist, every: int):
        self.dist, self.every = dist, every
        self.log = open(out / "log.jsonl", "a", encoding="utf-8") if dist.is_main else None
        self.data = open(out / f"data.rank{dist.rank}.jsonl", "a", encoding="utf-8")
        self.tb = None
        if dist.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                log.warning("tensorboard is not installed: no event files (pip install tensorboard)")
        self.window_start = time.perf_counter()
        self.clips = 0
        self.data_seconds = 0.0
        self.losses: list[float] = []

    def step(self, state: RunState, loss: float, optimizer, momentum: float, data_seconds: float,
             keys: list[str]) -> None:
        self.data.write(json.dumps({"step": state.step, "epoch": state.epoch, "keys": keys}) + "\n")
        self.clips += len(keys)
        self.data_seconds += data_seconds
        self.losses.append(loss)
        if self.log is None or (state.step % self.every and state.step != 1):
            return
        elapsed = time.perf_counter() - self.window_start
        record = {"step": state.step, "epoch": state.epoch, "loss": loss,
                  "loss_mean": sum(self.losses) / len(self.losses),
                  "lr": optimizer.param_groups[0]["lr"], "wd": optimizer.param_groups[0]["weight_decay"],
                  "momentum": momentum, "clips_per_s": self.clips * self.dist.world_size / elapsed,
                  "data_wait": self.data_seconds / elapsed}
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()
        if self.tb is not None:
            for key in ("loss", "lr", "wd", "momentum", "clips_per_s", "data_wait"):
                self.tb.add_scalar(f"train/{key}", record[key], state.step)
        self.window_start, self.clips, self.data_seconds, self.losses = time.perf_counter(), 0, 0.0, []

    def knn(self, state: RunState, top1: float, top5: float) -> None:
        """A k-NN evaluation: its own log.jsonl line and TensorBoard scalars."""
        if self.log is None:
            return
        record = {"step": state.step, "epoch": state.epoch, "knn_top1": top1, "knn_top5": top5}
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()
        if self.tb is not None:
            self.tb.add_scalar("knn/top1", top1, state.step)
            self.tb.add_scalar("knn/top5", top5, state.step)

    def close(self) -> None:
        self.data.close()
        if self.log is not None:
            self.log.close()
        if self.tb is not None:
            self.tb.close()
