"""The training loop: data, model, optimiser and schedules built by small functions into a `Run`, then
steps. What a run reports is wtours/train/logger.py's; its folder (lock, refusal, resume checks) is
wtours/train/folder.py's."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from wtours import distributed, stop
from wtours.clips.augment import MultiCropConfig
from wtours.clips.epoch import ClipConfig, source_clips_per_epoch
from wtours.clips.pipeline import ClipDataset, GpuAugmenter, LoaderConfig, make_loader
from wtours.clips.spec import local_folders, resolve_sets
from wtours.clips.stages import Problems
from wtours.dora import DoRA
from wtours.errors import EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_STOPPED, UsageError, WtoursError
from wtours.layout import CHECKPOINT_FILE, RUN_CONFIG_FILE, RUN_FACTS_FILE, write_json_atomic
from wtours.models.checkpoint import read_checkpoint, save_checkpoint
from wtours.system import default_workers
from wtours.train import folder
from wtours.train.config import STEPS, TrainConfig
from wtours.train.curves import write_curves
from wtours.train.logger import RunLogger, RunState, problems_line
from wtours.train.monitor import Monitor
from wtours.train.optim import cancel_last_layer_gradients, clip_per_tensor, cosine_schedule, ema_update, param_groups


@dataclass
class Schedules:
    lr: Any
    wd: Any
    momentum: Any
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int = 0  # the lr warm-up's iterations: the lr reaches its base value at the last of them

    def breakpoints(self, config: TrainConfig) -> dict[str, int]:
        """Where the schedules change course, in optimiser steps (run.json): the lr warm-up's end and the
        teacher temperature's (per epoch, as DINOLoss's teacher_temp_schedule)."""
        return {"lr_warmup_steps": min(self.warmup_steps, self.total_steps),
                "teacher_temp_warmup_steps": min(config.model.loss.warmup_teacher_temp_epochs * self.steps_per_epoch,
                                                 self.total_steps)}


def build_data(config: TrainConfig, dist: distributed.Dist) -> ClipDataset:
    """The run's clips; with --epoch-length source-frames an epoch holds the authors' count of them, so its
    steps (len) are theirs for the same video, processes and batch size."""
    sets = resolve_sets(config.shards, config.root)
    workers = config.workers if config.workers is not None else default_workers(dist.local_world_size)
    clip = ClipConfig(config.clip_frames, config.clip_stride, config.clips_per_shard, config.seed)
    if config.epoch_length == "source-frames":
        clip = replace(clip, epoch_clips=source_clips_per_epoch(sets, clip))
    loader = LoaderConfig(batch_size=config.batch_size, workers=workers, shuffle_buffer=config.shuffle_buffer,
                          augment=config.augment, clip=clip, multicrop=MultiCropConfig(n_local=config.model.n_local))
    shards = [ref for found in sets for ref in found.refs]
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
    if total not in STEPS:
        raise UsageError(f"--epochs {config.epochs} x {steps_per_epoch} steps per epoch is {total} steps, more than "
                         f"the schedules may span ({STEPS})", "lower --epochs, or pass --steps")
    base_lr = config.lr if config.lr is not None else 0.0005 * config.batch_size * world_size / 256
    # DINO's `warmup_epochs * niter_per_ep`, truncated: a fractional epoch count warms up for the whole
    # iterations it covers (DINO takes integer epochs; numpy needs an integer count)
    warmup = int(config.warmup_epochs * steps_per_epoch)
    return Schedules(
        lr=cosine_schedule(base_lr, config.min_lr, total, warmup),
        wd=cosine_schedule(config.weight_decay, config.weight_decay_end, total),
        momentum=cosine_schedule(config.momentum_teacher, 1.0, total),
        steps_per_epoch=steps_per_epoch, total_steps=total, warmup_steps=warmup)


def train(config: TrainConfig, say: Callable[[str], None] = print) -> RunState:
    """A stop signal (SIGTERM, SIGUSR1: wtours.stop) stops every rank at the next step boundary with a checkpoint of
    that step (exit EXIT_STOPPED); Ctrl-C stops at once, keeping the last checkpoint (exit EXIT_INTERRUPTED)."""
    # distributed.setup checks --device first: nothing is created for a missing one
    with stop.handled(defer=True), distributed.setup(config.device) as dist:
        if config.workers is None:  # resolved here, so config.json records what ran; a resume keeps the run's
            saved = folder.saved_workers(config)
            config = replace(config, workers=saved if saved is not None else default_workers(dist.local_world_size))
        return _train(config, dist, say if dist.is_main else (lambda m: None))


@dataclass
class Run:
    """One run's parts, built by `_train` and stepped by `_loop`."""

    config: TrainConfig
    dist: distributed.Dist
    out: Path
    dataset: ClipDataset
    model: DoRA
    student: torch.nn.Module  # model.student, DDP-wrapped when there are several processes
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedules: Schedules
    precision: str
    facts: dict  # world size, steps per epoch, total steps: what --resume compares besides the settings
    monitor: Monitor | None  # rank 0's (the evaluations during training), None on the others
    logger: RunLogger  # its `say` prints the console's lines (rank 0; silenced by -q)
    state: RunState  # updated in place by _start and _loop: what an interrupted run reports
    # what the loader skipped, summed over this process's workers (the batches' deltas); on rank 0 also the
    # checkpoint's totals (all ranks) when resumed, so the sums over the ranks continue where they were saved
    problems: Problems = field(default_factory=Problems)


def _train(config: TrainConfig, dist: distributed.Dist, say: Callable[[str], None]) -> RunState:
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder", "choose a folder for --out")
    dataset = build_data(config, dist)  # resolves the shards: still nothing written
    schedules = build_schedules(config, len(dataset), dist.world_size)
    monitor = Monitor.on_rank0(config, dist)  # the evaluations during training: their data checked now
    facts = {"world_size": dist.world_size, "steps_per_epoch": len(dataset), "total_steps": schedules.total_steps}
    state = RunState()
    try:
        with folder.run_folder(out, dist, config, facts, local_folders(dataset.shards)) as prepared:
            run = _build_run(config, dist, out, dataset, schedules, facts, monitor, say, state)
            try:
                _start(run, prepared)
                _loop(run)
            finally:
                run.logger.close()
    except KeyboardInterrupt:
        hint = ("no checkpoint was written yet: rerun with --resume (it starts afresh)" if state.saved_step is None
                else f"the checkpoint of step {state.saved_step} ({out / CHECKPOINT_FILE}) is intact; rerun with "
                "--resume to continue from it")
        raise WtoursError(f"interrupted at step {state.step}", hint, exit_code=EXIT_INTERRUPTED) from None
    return state


def _build_run(config: TrainConfig, dist: distributed.Dist, out: Path, dataset: ClipDataset, schedules: Schedules,
               facts: dict, monitor: Monitor | None, say: Callable[[str], None], state: RunState) -> Run:
    """The model (the same initial weights on every rank), its DDP wrapper, optimiser, scaler and logger."""
    torch.manual_seed(config.seed)  # the same initial weights on every rank: the teacher is not DDP-synced
    model = build_model(config, dist.device)
    torch.manual_seed(config.seed + dist.rank)  # then each rank its own heads and dropout
    if config.compile:  # compiled graphs run the same modules: state-dict names do not change
        model.student.backbone.forward = torch.compile(model.student.backbone.forward)
        model.teacher.backbone.forward_last_attention = torch.compile(model.teacher.backbone.forward_last_attention)
    student: torch.nn.Module = model.student
    if dist.world_size > 1:
        student = torch.nn.parallel.DistributedDataParallel(
            model.student, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    precision = config.precision or ("bf16" if dist.device.type == "cuda" else "fp32")
    return Run(config, dist, out, dataset, model, student, torch.optim.AdamW(param_groups(model.student)),
               torch.amp.GradScaler(dist.device.type, enabled=precision == "fp16"), schedules, precision, facts,
               monitor, RunLogger(out, dist, schedules.total_steps, say), state)


def _start(run: Run, prepared: dict) -> None:
    """--resume's checkpoint loaded (into `run.state` too), config.json (the config itself: --config reads it
    back), run.json (what it implied), the start lines."""
    config, dist, dataset, schedules, state = run.config, run.dist, run.dataset, run.schedules, run.state
    path = run.out / CHECKPOINT_FILE
    if config.resume and path.is_file():
        checkpoint = read_checkpoint(path)
        run.model.load_official_checkpoint(checkpoint)
        run.optimizer.load_state_dict(checkpoint["optimizer"])
        run.scaler.load_state_dict(checkpoint["scaler"])
        state.step = state.saved_step = checkpoint["step"]
        state.epoch, state.step_in_epoch = checkpoint["epoch"], checkpoint["step_in_epoch"]
        if dist.is_main:
            run.problems.add(checkpoint.get("problems"))
        run.logger.say(f"resumed from {path} at step {state.step} (epoch {state.epoch}, batch {state.step_in_epoch})")
    elif config.resume:
        run.logger.say(f"--resume: no checkpoint in {run.out}; starting from scratch")
    clips = dataset.clips_per_epoch()
    if dist.is_main:
        write_json_atomic(run.out / RUN_CONFIG_FILE, folder.recorded(config))
        write_json_atomic(run.out / RUN_FACTS_FILE, {
            **run.facts, "precision": run.precision, "workers": config.workers, "clips_per_epoch": clips,
            "epoch_length": config.epoch_length, **schedules.breakpoints(config),
            "reschedules": folder.reschedules(run.out, prepared["changed"], state.step)})
    run.logger.say(f"training {config.model.arch} on {len(dataset.shards)} shards: {clips} "
                   f"clips per epoch, {schedules.steps_per_epoch} steps per epoch x {dist.world_size} process(es), "
                   f"{schedules.total_steps} steps, {run.precision} on {dist.device}")
    if prepared["changed"]:
        run.logger.say(f"--reschedule: {folder.describe(prepared['changed'])}; schedules recomputed from step "
                       f"{state.step}")


def _loop(run: Run) -> None:
    """The steps, from `run.state` on (updated in place, `saved_step` included)."""
    config, dist, dataset, state, schedules, logger = (run.config, run.dist, run.dataset, run.state, run.schedules,
                                                       run.logger)
    gpu_augment = GpuAugmenter(dataset.config.multicrop, dist.device) if config.augment == "gpu" else None
    problems = run.problems
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(run.precision)
    first_step = state.step
    while state.step < schedules.total_steps:
        dataset.set_epoch(state.epoch, skip_batches=state.step_in_epoch)
        waited = time.perf_counter()
        for batch in make_loader(dataset, pin_memory=dist.device.type == "cuda"):
            data_seconds = time.perf_counter() - waited
            it = state.step
            # every random draw follows from (seed, epoch or step, rank, batch): a resumed run draws what an
            # uninterrupted one does (the CPU path's augmentation is seeded per batch in the loader)
            torch.manual_seed(hash((config.seed, dist.rank, it)))  # drop-path and the tracked heads
            if gpu_augment is not None:
                gpu_augment.reseed(config.seed, state.epoch, dist.rank, state.step_in_epoch)
            # the CPU path sends uint8 views: normalised on the device, after the (4x smaller) copy
            crops = (gpu_augment(batch) if gpu_augment is not None
                     else batch.to(dist.device, non_blocking=True).normalised())
            # A checkpoint due after step `it` is written during the next step, once that step's loss (of
            # exactly the state to keep) is known to be finite and before its update: a state that
            # already diverged is never kept as the "last good" one.
            due = it > first_step and it % config.checkpoint_every == 0
            saved_before = state.saved_step
            settings = StepSettings(float(schedules.lr[it]), float(schedules.wd[it]), float(schedules.momentum[it]),
                                    state.epoch, config.clip_grad, config.freeze_last_layer, autocast_dtype)
            loss_value, _ = train_step(run.model, run.student, list(crops), run.optimizer, run.scaler, settings,
                                       partial(_checkpoint, run) if due else None)
            if not math.isfinite(loss_value):
                raise _non_finite(run, f"the loss is {loss_value} at step {state.step + 1}")
            # after a due checkpoint of the step before it; the GPU path's clips that do not decode included
            problems.add(crops.problems)
            state.step += 1
            state.step_in_epoch += 1
            logged = state.step % config.log_every == 0 or state.step in (1, schedules.total_steps)
            logger.step(state, loss_value, run.optimizer, float(schedules.momentum[it]), data_seconds, batch.keys,
                        _gathered(problems) if logged else None)
            if state.step == schedules.total_steps:  # no next step to confirm it: finite weights suffice
                _checkpoint(run)
            _evaluate(run)
            if state.step >= schedules.total_steps:
                break  # the run's end draws the last curve
            if dist.is_main and state.saved_step != saved_before:  # the curve so far, beside each checkpoint: drawn
                write_curves(run.out)  # here, not inside the step (where the checkpoint is written) for all to wait
            _stop_if_requested(run)
            waited = time.perf_counter()
        else:
            state.epoch += 1
            state.step_in_epoch = 0
    curve = write_curves(run.out) if run.dist.is_main else None  # with the evaluations of the last step
    logger.say(f"done: {state.step} steps; checkpoint {run.out / CHECKPOINT_FILE}; log {run.out / 'log.jsonl'}"
               + (f"; curves {curve}" if curve else ""))
    line = problems_line(_gathered(problems))
    if line:
        logger.say(line)


def _stop_if_requested(run: Run) -> None:
    """At a step boundary: a stop signal to any rank (wtours.stop) stops every rank here, with a checkpoint of
    this step (the ranks agree by a collective, so it works when the signal reached one rank or all)."""
    signum = distributed.max_over_ranks(stop.requested() or 0, run.dist.device)
    if not signum:
        return
    _checkpoint(run)
    if run.dist.is_main:
        write_curves(run.out)
    distributed.all_gather(None)  # the ranks leave once it is written: a launcher may kill the rest when one exits
    raise WtoursError(f"stopped by {stop.name(signum)} after step {run.state.step}; its checkpoint is written",
                      f"rerun with --resume to continue from step {run.state.step} ({run.out / CHECKPOINT_FILE})",
                      exit_code=EXIT_STOPPED)


def _gathered(problems: Problems) -> dict:
    """`problems.counts()` summed over the ranks (a collective: every rank calls it at the same step)."""
    total = Problems()
    for counts in distributed.all_gather(problems.counts()):
        total.add(counts)
    return total.counts()


def _non_finite(run: Run, what: str) -> WtoursError:
    """The error after a non-finite loss or weights, with what to do for this run's precision."""
    peak_lr = float(max(run.schedules.lr)) if len(run.schedules.lr) else 0.0
    lower = f"a lower --lr (e.g. --lr {peak_lr / 4:.3g}; the peak was {peak_lr:.3g})"
    fix = {"fp32": f"{lower} (the run is fp32 already)",
           "bf16": f"{lower}, or --precision fp32",
           "fp16": f"--precision bf16 (or fp32): fp16 overflows easily; or {lower}"}[run.precision]
    saved_step = run.state.saved_step
    hint = (f"no checkpoint was written yet; rerun with --overwrite and {fix}" if saved_step is None
            else f"the last good checkpoint is {run.out / CHECKPOINT_FILE} (step {saved_step}); continue from it "
            f"with --resume --reschedule and {fix}")
    return WtoursError(f"{what}; training stopped", hint, exit_code=EXIT_DIVERGED)


def _checkpoint(run: Run) -> None:
    """Write the current state (step `state.step`) once it is known to be finite (every rank checks the same
    weights, so all stop together otherwise), with the settings and facts that --resume compares."""
    model, state, config = run.model, run.state, run.config
    tensors = [p.detach() for p in (*model.student.parameters(), *model.teacher.parameters(), model.loss.center)]
    # element-wise, one host sync: a norm of huge but finite weights would itself overflow
    if not torch.stack([torch.isfinite(t).all() for t in tensors]).all():
        raise _non_finite(run, f"the weights are not finite after step {state.step}")
    problems = _gathered(run.problems)  # the loader's tallies so far (all ranks), which --resume continues
    if run.dist.is_main:
        save_checkpoint(run.out / CHECKPOINT_FILE, {
            "student": model.student.state_dict(), "teacher": model.teacher.state_dict(),
            "dora_loss": {"center": model.loss.center}, "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict(), "step": state.step, "epoch": state.epoch,
            "step_in_epoch": state.step_in_epoch, "arch": config.model.arch, "out_dim": config.model.out_dim,
            "config": folder.recorded(config), "schedule": run.facts, "problems": problems})
    state.saved_step = state.step


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
               settings: StepSettings, before_update: Callable[[], None] | None = None) -> tuple[float, Any]:
    """One DoRA step: loss, backward, per-tensor clipping, last-layer freeze, AdamW, EMA, centre. Returns the
    loss as a float (the step's one host sync) and the model output; a non-finite loss is returned before
    anything is updated. `before_update` runs once the loss is known to be finite, before the weights change
    (the loop writes a due checkpoint there)."""
    for group in optimizer.param_groups:
        group["lr"] = settings.lr
    optimizer.param_groups[0]["weight_decay"] = settings.weight_decay  # the other group's stays 0 (param_groups)
    with torch.autocast(crops[0].device.type, dtype=settings.autocast_dtype or torch.float32,
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
    if before_update is not None:
        before_update()
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


def _evaluate(run: Run) -> None:
    """After the last step of every --eval-every-th epoch and of the run: the evaluations given, on the teacher
    backbone, logged."""
    state, schedules = run.state, run.schedules
    epochs_done = state.epoch + 1 if state.step_in_epoch == schedules.steps_per_epoch else None
    if stop.requested():  # a scheduler's grace period is for the checkpoint, not for an evaluation
        return
    if run.monitor is not None and run.monitor.due(epochs_done, run_over=state.step == schedules.total_steps):
        for name, figures, line in run.monitor.evaluate(run.model.teacher.backbone, run.dist.device):
            run.logger.evaluation(state, name, figures)
            run.logger.say(f"step {state.step}: {line}")
