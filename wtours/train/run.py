"""The training loop: data, model, optimiser and schedules built by small functions, then steps."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from wtours.clips.augment import MultiCropConfig
from wtours.clips.epoch import ClipConfig
from wtours.clips.pipeline import ClipDataset, GpuAugmenter, LoaderConfig, make_loader
from wtours.clips.spec import resolve
from wtours.dora import DoRA
from wtours.errors import UsageError, WtoursError
from wtours.layout import CHECKPOINT_FILE, read_json, write_json_atomic
from wtours.locks import LOCK_FILE, folder_lock
from wtours.models.checkpoint import read_checkpoint as load_checkpoint
from wtours.models.checkpoint import save_checkpoint
from wtours.system import default_workers
from wtours.train import distributed, folder
from wtours.train.config import TrainConfig
from wtours.train.folder import latest_checkpoint
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
    saved_step: int | None = None  # the step of the last checkpoint written or resumed from


def build_data(config: TrainConfig, dist: distributed.Dist) -> ClipDataset:
    shards = resolve(config.shards, config.root)
    workers = config.workers if config.workers is not None else default_workers(dist.local_world_size)
    loader = LoaderConfig(batch_size=config.batch_size, workers=workers, shuffle_buffer=config.shuffle_buffer,
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


def _saved_workers(config: TrainConfig) -> int | None:
    """--resume without --workers: the run's own worker count (it decides which clips form each batch)."""
    saved = read_json(Path(config.out) / "config.json") if config.resume else None
    workers = saved.get("workers") if isinstance(saved, dict) else None
    return workers if isinstance(workers, int) and not isinstance(workers, bool) and workers >= 0 else None


def precision_of(config: TrainConfig, device: torch.device) -> str:
    return config.precision or ("bf16" if device.type == "cuda" else "fp32")


def train(config: TrainConfig, say: Callable[[str], None] = print) -> RunState:
    dist = distributed.setup(config.device)  # checks --device first: nothing is created for a missing one
    if config.workers is None:  # resolved here, so config.json records what ran; a resume keeps the run's
        saved = _saved_workers(config)
        config = replace(config, workers=saved if saved is not None else default_workers(dist.local_world_size))
    try:
        return _train(config, dist, say if dist.is_main else (lambda m: None))
    finally:
        distributed.teardown()


class Interrupted(WtoursError):
    exit_code = 130  # as a shell reports Ctrl-C


def interrupted_hint(out: Path, saved_step: int | None) -> str:
    if saved_step is None:
        return "no checkpoint was written yet: rerun with --resume (it starts afresh)"
    return (f"the checkpoint of step {saved_step} ({out / CHECKPOINT_FILE}) is intact; rerun with --resume to "
            "continue from it")


def non_finite_hint(out: Path, saved_step: int | None, precision: str, peak_lr: float) -> str:
    """What to do after a non-finite loss or weights, for this run's precision."""
    lower = f"a lower --lr (e.g. --lr {peak_lr / 4:.3g}; the peak was {peak_lr:.3g})"
    fix = {"fp32": f"{lower} (the run is fp32 already)",
           "bf16": f"{lower}, or --precision fp32",
           "fp16": f"--precision bf16 (or fp32): fp16 overflows easily; or {lower}"}[precision]
    if saved_step is None:
        return f"no checkpoint was written yet; rerun with --overwrite and {fix}"
    return (f"the last good checkpoint is {out / CHECKPOINT_FILE} (step {saved_step}); continue from it with "
            f"--resume --reschedule and {fix}")


def weights_finite(model: DoRA) -> bool:
    """Every student and teacher weight and the centre finite (one host sync; checkpoint steps only)."""
    tensors = [p.detach() for p in (*model.student.parameters(), *model.teacher.parameters())]
    tensors.append(model.loss.center)
    # element-wise: a norm of huge but finite weights would itself overflow
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


class _ProblemTally:
    """What the loader skipped, summed over this process's workers (from the batches' deltas); `gathered`
    sums it over the ranks (a collective: every rank calls it at the same step)."""

    def __init__(self) -> None:
        self.bad_shards: dict[str, str] = {}
        self.bad_samples = 0
        self.bad_clips = 0

    def add(self, delta: dict | None) -> None:
        if delta:
            self.bad_shards.update(delta["bad_shards"])
            self.bad_samples += delta["bad_samples"]
            self.bad_clips += delta["bad_clips"]

    def gathered(self) -> dict:
        shards: dict[str, str] = {}
        samples = clips = 0
        for part in distributed.all_gather((self.bad_shards, self.bad_samples, self.bad_clips)):
            shards.update(part[0])
            samples += part[1]
            clips += part[2]
        return {"bad_shards": shards, "bad_samples": samples, "bad_clips": clips}


def problems_line(problems: dict) -> str | None:
    if not (problems["bad_shards"] or problems["bad_samples"] or problems["bad_clips"]):
        return None
    shards = sorted(problems["bad_shards"])
    named = ", ".join(shards[:3]) + (", ..." if len(shards) > 3 else "")
    return (f"skipped: {len(shards)} unreadable shard(s)" + (f" ({named})" if shards else "")
            + f", {problems['bad_samples']} damaged sample(s), {problems['bad_clips']} clip(s) with a frame that "
            "does not decode (re-make damaged shards with wtours shard, or leave them out of --shards)")


def _read_checkpoint_meta(path: Path) -> dict:
    """A checkpoint's step, config and schedule facts, without reading its tensors (mmap)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 (torch raises many types for a bad file)
        raise WtoursError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})",
                          "pass --overwrite to start afresh (it removes that file), or choose another --out") from e
    return {k: checkpoint.get(k) for k in ("step", "config", "schedule")}


def _prepare_folder(out: Path, config: TrainConfig, facts: dict) -> dict:
    """Rank 0, holding the folder's lock: refuse or clear what is there, and check a resume."""
    for stale in folder.stale_temporaries(out):  # left by a run killed while writing
        stale.unlink(missing_ok=True)
    folder.refuse_existing(out, config.resume, config.overwrite)
    if config.overwrite:
        folder.remove_outputs(out)
    changed: dict = {}
    step = 0
    path = latest_checkpoint(out)
    if config.resume and path is not None:
        meta = _read_checkpoint_meta(path)
        step = int(meta.get("step") or 0)
        if meta.get("config"):
            saved = {**folder.flat_settings(meta["config"]), **(meta.get("schedule") or {})}
            changed = folder.changes(saved, {**folder.flat_settings(_recorded(config)), **facts})
            if changed and not config.reschedule:
                folder.refuse_changes(out, step, changed)
    if config.resume:  # steps after the checkpoint are redone: each is logged once
        folder.trim_jsonl(out / "log.jsonl", step)
    return {"changed": changed, "step": step}


def _recorded(config: TrainConfig) -> dict:
    """config.json: the run's settings; --resume/--overwrite/--reschedule act on one invocation only, so
    `--config config.json` reruns the settings without them."""
    return replace(config, resume=False, overwrite=False, reschedule=False).to_dict()


@contextmanager
def _run_folder(out: Path, dist: distributed.Dist, config: TrainConfig, facts: dict) -> Iterator[dict]:
    """Hold the run folder (rank 0 takes the lock; the others follow its decision) for the block.

    A refused or failed start leaves no folder behind that it created."""
    created = not out.exists()
    with ExitStack() as stack:
        def take() -> dict:
            stack.enter_context(folder_lock(out, "run folder"))
            return _prepare_folder(out, config, facts)

        try:
            prepared = distributed.agree(dist, take)
        except BaseException:
            stack.close()
            if created and dist.is_main and out.is_dir() and {p.name for p in out.iterdir()} <= {LOCK_FILE}:
                shutil.rmtree(out, ignore_errors=True)
            raise
        if dist.rank != 0:  # each rank's own data log, trimmed as rank 0 trimmed log.jsonl
            folder.trim_jsonl(out / f"data.rank{dist.rank}.jsonl", prepared["step"])
        elif config.resume:
            folder.trim_jsonl(out / "data.rank0.jsonl", prepared["step"])
        yield prepared


def _train(config: TrainConfig, dist: distributed.Dist, say: Callable[[str], None]) -> RunState:
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder", "choose a folder for --out")
    dataset = build_data(config, dist)  # resolves the shards: still nothing written
    steps_per_epoch = len(dataset)
    precision = precision_of(config, dist.device)
    schedules = build_schedules(config, steps_per_epoch, dist.world_size)
    knn = _knn_monitor(config, dist)  # k-NN monitoring (--knn-train/--knn-val): folders checked now
    facts = {"world_size": dist.world_size, "steps_per_epoch": steps_per_epoch, "total_steps": schedules.total_steps}
    state = RunState()
    try:
        with _run_folder(out, dist, config, facts) as prepared:
            torch.manual_seed(config.seed)  # the same initial weights on every rank: the teacher is not DDP-synced
            model = build_model(config, dist.device)
            torch.manual_seed(config.seed + dist.rank)  # then each rank its own heads and dropout
            if config.compile:  # compiled graphs run the same modules: state-dict names do not change
                model.student.backbone.forward = torch.compile(model.student.backbone.forward)
                model.teacher.backbone.forward_last_attention = torch.compile(
                    model.teacher.backbone.forward_last_attention)
            student = model.student
            if dist.world_size > 1:
                student = torch.nn.parallel.DistributedDataParallel(
                    model.student, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
            optimizer = torch.optim.AdamW(param_groups(model.student))
            scaler = torch.amp.GradScaler(dist.device.type, enabled=precision == "fp16")
            if config.resume:
                state = _resume(out, model, optimizer, scaler, say)
            if dist.is_main:  # config.json is the config itself (--config reads it back); run.json what it implied
                write_json_atomic(out / "config.json", _recorded(config))
                write_json_atomic(out / "run.json", {**facts, "precision": precision, "workers": config.workers,
                                                     "clips_per_epoch": dataset.clips_per_epoch(),
                                                     "reschedules": _reschedules(out, prepared, state.step)})
            say(f"training {config.model.arch} on {len(dataset.shards)} shards: {dataset.clips_per_epoch()} clips "
                f"per epoch, {steps_per_epoch} steps per epoch x {dist.world_size} process(es), "
                f"{schedules.total_steps} steps, {precision} on {dist.device}")
            logger = _RunLogger(out, dist, config.log_every, schedules.total_steps, say)
            try:
                if prepared["changed"]:
                    say(f"--reschedule: {folder.describe(prepared['changed'])}; schedules recomputed from step "
                        f"{state.step}")
                _loop(config, dist, dataset, model, student, optimizer, scaler, schedules, state, precision, facts,
                      knn, logger, out, say)
            finally:
                logger.close()
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted at step {state.step}", interrupted_hint(out, state.saved_step)) from None
    return state


def _loop(config: TrainConfig, dist: distributed.Dist, dataset: ClipDataset, model: DoRA, student, optimizer,
          scaler, schedules: Schedules, state: RunState, precision: str, facts: dict, knn, logger: _RunLogger,
          out: Path, say: Callable[[str], None]) -> None:
    """The steps, from `state` on (updated in place, `saved_step` included)."""
    gpu_augment = GpuAugmenter(dataset.config.multicrop, dist.device) if config.augment == "gpu" else None
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    problems = _ProblemTally()
    peak_lr = float(max(schedules.lr)) if len(schedules.lr) else 0.0

    first_step = state.step

    def stop(what: str) -> NonFiniteLoss:
        return NonFiniteLoss(f"{what}; training stopped", non_finite_hint(out, state.saved_step, precision, peak_lr))

    def checkpoint() -> None:
        """Write the current state (step `state.step`), which is finite: every rank checks the same weights,
        so all stop together otherwise."""
        if not weights_finite(model):
            raise stop(f"the weights are not finite after step {state.step}")
        logger.flush()  # the data log is complete up to the checkpoint
        if dist.is_main:
            _save(out, model, optimizer, scaler, state, config, facts)
        state.saved_step = state.step

    while state.step < schedules.total_steps:
        dataset.set_epoch(state.epoch, skip_batches=state.step_in_epoch)
        if gpu_augment is not None:
            gpu_augment.reseed(config.seed, state.epoch, dist.rank, state.step_in_epoch)
        waited = time.perf_counter()
        for batch in make_loader(dataset, pin_memory=dist.device.type == "cuda"):
            data_seconds = time.perf_counter() - waited
            problems.add(getattr(batch, "problems", None))
            # the CPU path sends uint8 views: normalised on the device, after the (4x smaller) copy
            crops = (gpu_augment(batch) if gpu_augment is not None
                     else batch.to(dist.device, non_blocking=True).normalised())
            it = state.step
            # A checkpoint due after step `it` is written during the next step, once that step's loss (of
            # exactly the state to keep) is known to be finite and before its update: a state that
            # already diverged is never kept as the "last good" one.
            due = it > first_step and it % config.checkpoint_every == 0
            loss_value, output = train_step(
                model, student, list(crops), optimizer, scaler, StepSettings(
                    float(schedules.lr[it]), float(schedules.wd[it]), float(schedules.momentum[it]),
                    state.epoch, config.clip_grad, config.freeze_last_layer, autocast_dtype),
                before_update=checkpoint if due else None)
            if not math.isfinite(loss_value):
                raise stop(f"the loss is {loss_value} at step {state.step + 1}")
            state.step += 1
            state.step_in_epoch += 1
            logged = state.step % config.log_every == 0 or state.step in (1, schedules.total_steps)
            logger.step(state, loss_value, optimizer, float(schedules.momentum[it]), data_seconds, batch.keys,
                        problems.gathered() if logged else None)
            if state.step == schedules.total_steps:  # no next step to confirm it: finite weights suffice
                checkpoint()
            _knn_evaluate(knn, model, state, schedules, logger, dist.device, say)
            if state.step >= schedules.total_steps:
                break
            waited = time.perf_counter()
        else:
            state.epoch += 1
            state.step_in_epoch = 0
    totals = problems.gathered()
    say(f"done: {state.step} steps; checkpoint {out / CHECKPOINT_FILE}; log {out / 'log.jsonl'}")
    line = problems_line(totals)
    if line:
        say(line)


def _problem_record(problems: dict) -> dict:
    """log.jsonl's counts of what the loader skipped so far (all workers and ranks), and the bad shards' URLs."""
    record = {"bad_shards": len(problems["bad_shards"]), "bad_samples": problems["bad_samples"],
              "bad_clips": problems["bad_clips"]}
    if problems["bad_shards"]:
        record["bad_shard_urls"] = sorted(problems["bad_shards"])
    return record


def _reschedules(out: Path, prepared: dict, step: int) -> list[dict]:
    """run.json's history of --reschedule: the earlier ones, and this one's changes."""
    try:
        earlier = json.loads((out / "run.json").read_text(encoding="utf-8")).get("reschedules", [])
    except (OSError, ValueError, AttributeError):
        earlier = []
    earlier = [r for r in earlier if isinstance(r, dict) and r.get("step", 0) <= step]
    return earlier + ([{"step": step, "changed": prepared["changed"]}] if prepared["changed"] else [])


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
    """One DoRA step: loss, backward, per-tensor clipping, last-layer freeze, AdamW, EMA, centre.

    Returns the loss as a float (the step's one host sync) and the model output. A non-finite loss
    is returned before anything is updated; `before_update` runs once the loss is known to be finite,
    before the weights change (the loop writes a due checkpoint there)."""
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


def _save(out: Path, model: DoRA, optimizer, scaler, state: RunState, config: TrainConfig, facts: dict) -> None:
    """The checkpoint, with the settings (`config`) and facts (`schedule`: world size, steps per epoch,
    total steps) that --resume compares."""
    save_checkpoint(out / CHECKPOINT_FILE, {
        "student": model.student.state_dict(), "teacher": model.teacher.state_dict(),
        "dora_loss": {"center": model.loss.center}, "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(), "step": state.step, "epoch": state.epoch,
        "step_in_epoch": state.step_in_epoch, "arch": config.model.arch, "out_dim": config.model.out_dim,
        "config": _recorded(config), "schedule": facts})


def _resume(out: Path, model: DoRA, optimizer, scaler, say: Callable[[str], None]) -> RunState:
    path = latest_checkpoint(out)
    if path is None:
        say(f"--resume: no checkpoint in {out}; starting from scratch")
        return RunState()
    checkpoint = load_checkpoint(path)
    model.load_official_checkpoint(checkpoint)
    optimizer.load_state_dict(checkpoint["optimizer"])
    scaler.load_state_dict(checkpoint["scaler"])
    state = RunState(checkpoint["step"], checkpoint["epoch"], checkpoint["step_in_epoch"], checkpoint["step"])
    say(f"resumed from {path} at step {state.step} (epoch {state.epoch}, batch {state.step_in_epoch})")
    return state


# ---------------------------------------------------------------- k-NN monitoring (wtours.eval)


def _knn_monitor(config: TrainConfig, dist: distributed.Dist):
    """A KnnMonitor on rank 0 when --knn-train/--knn-val are given, else None."""
    if not config.knn_train or not config.knn_val or not dist.is_main:
        return None
    from wtours.eval.knn import KnnConfig, KnnMonitor

    knn = KnnConfig(workers=min(config.workers or 0, 4))
    return KnnMonitor(config.knn_train, config.knn_val, config.knn_every, knn)


def _knn_evaluate(knn, model: DoRA, state: RunState, schedules: Schedules, logger: _RunLogger, device,
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


def _duration(seconds: float) -> str:
    """3:05:09 or 4:02 (hours only when there are some)."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(state: RunState, total_steps: int, loss: float, clips_per_s: float, eta: float | None,
                  warmup_seconds: float | None = None) -> str:
    """The console line of a logged step: step/total, epoch, loss, clips/s over the interval since the last
    line (all ranks), ETA; the warm-up step shows its own duration instead of a rate."""
    width = len(str(total_steps))
    rate = (f"first step {warmup_seconds:.1f} s (start-up, warm-up)" if warmup_seconds is not None
            else f"{clips_per_s:.1f} clips/s")
    when = "done" if state.step >= total_steps else "ETA " + (_duration(eta) if eta is not None else "?")
    return f"step {state.step:>{width}}/{total_steps}  epoch {state.epoch}  loss {loss:.4f}  {rate}  {when}"


class _RunLogger:
    """log.jsonl (every log_every steps), TensorBoard events and a progress line (rank 0; `say` is silenced
    by -q), and data.rank<r>.jsonl (clip keys).

    The first step of the process (torch.compile, loader start-up, CUDA warm-up) is timed apart: it is
    left out of the clips/s of its interval and out of the ETA, which uses the steps since then."""

    def __init__(self, out: Path, dist: distributed.Dist, every: int, total_steps: int = 0,
                 say: Callable[[str], None] = lambda m: None, clock: Callable[[], float] = time.perf_counter):
        self.dist, self.every, self.total_steps, self.say, self.clock = dist, every, total_steps, say, clock
        self.log = open(out / "log.jsonl", "a", encoding="utf-8") if dist.is_main else None
        self.data = open(out / f"data.rank{dist.rank}.jsonl", "a", encoding="utf-8")
        self.tb = None
        if dist.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                log.warning("tensorboard is not installed: no event files (pip install tensorboard)")
        self.window_start = self.clock()
        self.clips = 0
        self.data_seconds = 0.0
        self.losses: list[float] = []
        self.warm: tuple[int, float] | None = None  # (step, time) at the end of the process's first step

    def step(self, state: RunState, loss: float, optimizer, momentum: float, data_seconds: float,
             keys: list[str], problems: dict | None = None) -> None:
        """One step; `problems` (what the loader skipped so far, all ranks) is given on logged steps."""
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
                  "data_wait": self.data_seconds / elapsed, **_problem_record(problems)}
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()
        if self.tb is not None:
            for key in ("loss", "lr", "wd", "momentum", "clips_per_s", "data_wait"):
                self.tb.add_scalar(f"train/{key}", record[key], state.step)
        self.say(progress_line(state, self.total_steps, loss, record["clips_per_s"], self.eta(state.step, now),
                               elapsed if warmup else None))
        self.window_start, self.clips, self.data_seconds, self.losses = now, 0, 0.0, []

    def eta(self, step: int, now: float) -> float | None:
        """Seconds left at the mean pace of the steps after the warm-up step (None: none timed yet)."""
        if self.warm is None or step <= self.warm[0]:
            return None
        return (self.total_steps - step) * (now - self.warm[1]) / (step - self.warm[0])

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

    def flush(self) -> None:
        self.data.flush()
        if self.log is not None:
            self.log.flush()

    def close(self) -> None:
        self.data.close()
        if self.log is not None:
            self.log.close()
        if self.tb is not None:
            self.tb.close()
