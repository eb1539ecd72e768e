"""The run folder: what a run writes there, and what a new run does with a run already there. One run at a
time holds it (wtours.locks.folder_lock, taken by rank 0; docs/troubleshooting.md, "Training runs"). A folder
holding a run is refused without --resume or --overwrite; --overwrite removes only the files a run writes;
--resume refuses changed settings that shape the schedules or the data unless --reschedule is given. Rank 0
decides and wtours.distributed.agree tells the other ranks: nothing here needs torch's process group."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from wtours import distributed
from wtours.clips.spec import split_specs
from wtours.config import build_dict, coerce, flagged
from wtours.errors import UsageError, WtoursError
from wtours.layout import (
    CHECKPOINT_FILE,
    RUN_CONFIG_FILE,
    RUN_DATA_LOG_GLOB,
    RUN_DATA_LOG_PREFIX,
    RUN_FACTS_FILE,
    RUN_FILES,
    RUN_LOG_FILE,
    RUN_TENSORBOARD_DIR,
    read_json,
    remove_stale_temporaries,
    run_data_log,
    write_bytes_atomic,
)
from wtours.locks import LOCK_FILE, folder_lock, reading
from wtours.models.checkpoint import read_checkpoint
from wtours.records import is_number
from wtours.redact import shown
from wtours.train.config import TrainConfig


def free_settings() -> frozenset[str]:
    """Settings that change only how fast the run computes, or nothing: free to change on --resume (the fields
    flagged "free"). Not "workers": each loader worker reads its own stretch of the epoch, so the worker count
    decides which clips make up each batch; another count on resume would repeat some clips and skip others."""
    return flagged(TrainConfig, "free")


# What the schedules and the data order follow beyond the settings: compared on --resume too.
DERIVED = {"world_size": "processes (world size)", "steps_per_epoch": "steps per epoch",
           "total_steps": "total steps"}


def flat_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A nested config dict (as config.json) by leaf name, JSON-normalised (tuples -> lists)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        flat.update(flat_settings(value) if isinstance(value, dict) else {key: json.loads(json.dumps(value))})
    return flat


def changes(saved: dict[str, Any], now: dict[str, Any]) -> dict[str, list]:
    """{name: [checkpoint's, this run's]} for every schedule- or data-shaping setting that differs
    (names missing on one side, as in an older checkpoint, are not compared)."""
    free = free_settings()
    return {key: [saved[key], value] for key, value in now.items()
            if key not in free and key in saved and saved[key] != value}


def describe(changed: dict[str, list]) -> str:
    return ", ".join(f"{DERIVED.get(key) or '--' + key.replace('_', '-')} {old} -> {new}"
                     for key, (old, new) in changed.items())


def trim_jsonl(path: Path, last_step: int) -> None:
    """Drop the lines after `last_step` (and a torn last line) from a run's .jsonl: a resumed run
    redoes those steps, so each step is logged once."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if line.endswith("\n") and record.get("step", 0) <= last_step:
            kept.append(line)
    if len(kept) < len(lines):
        write_bytes_atomic(path, "".join(kept).encode("utf-8"))


# ---------------------------------------------------------------- --resume: the run's own model


# The settings the checkpoint's weights are shaped by: no --reschedule can change them on --resume.
WEIGHT_SHAPES = ("arch", "out_dim", "hidden_dim", "bottleneck_dim")


def resumed_model_settings(given: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """For `wtours train --resume`: the run's own model settings (nested as TrainConfig's `model`: the layer under
    --config/--set/options, so only values given explicitly differ) and the file they were read from: the
    checkpoint (its "config" entry: the weights' true shapes, also for a copied checkpoint alone), else
    --out/config.json. None when not resuming or when nothing records a model. `given`: command_settings'."""
    try:
        resume = coerce(given.get("resume", False), bool, "resume")
        out = coerce(given.get("out"), str, "out") if given.get("out") is not None else None
    except WtoursError:
        return None  # building the config names the bad value
    if not resume or not out:
        return None
    where = Path(out) / CHECKPOINT_FILE
    try:  # memory-mapped: the weights are not read
        raw = read_checkpoint(where, mmap=True)
    except WtoursError:  # missing, or unreadable: the run itself names such a file
        raw = None
    saved: Any = raw.get("config") if isinstance(raw, dict) else None
    if isinstance(saved, dict):
        saved = json.loads(json.dumps(saved, default=str))
    else:  # no checkpoint, or one without settings (the authors')
        where = Path(out) / RUN_CONFIG_FILE
        if not where.is_file():
            return None
        saved = read_json(where)
        if not isinstance(saved, dict):
            raise WtoursError(f"{where} is not a training run's config.json (no mapping of settings)",
                              f"--resume reads the run's model from it: restore it, or pass --overwrite to start "
                              f"afresh in {out}")
    model = build_dict(TrainConfig, saved, f" in {where}").get("model")  # nested, or flat by option name
    return (model, str(where)) if model else None


def refuse_reshaped_model(run_model: dict[str, Any], model: dict[str, Any], source: str) -> None:
    """--resume with an explicitly different architecture or head size: the checkpoint's weights do not fit that
    model, so --reschedule cannot accept it either. `source`: the file the run's model was read from (hint)."""
    changed = changes(flat_settings(run_model), {k: v for k, v in flat_settings(model).items() if k in WEIGHT_SHAPES})
    if changed:
        raise UsageError(f"--resume: {describe(changed)}: the run's checkpoint holds weights of another shape",
                         f"leave these options out to resume with the run's own model (from {source}), or start a "
                         "new run with --overwrite or another --out")


@contextmanager
def run_folder(out: Path, dist: distributed.Dist, config: TrainConfig, facts: dict,
               shard_sets: Sequence[Path] = ()) -> Iterator[dict]:
    """Hold the run folder, and the local `shard_sets` as their reader (so no run replaces or repairs them during
    training), for the block: rank 0 takes the locks, the others follow its decision. Yields `prepare`'s
    {"changed": ..., "step": ...}. A refused or failed start leaves no folder behind that it created."""
    created = not out.exists()
    with ExitStack() as stack:
        def take() -> dict:
            stack.enter_context(reading(shard_sets))
            stack.enter_context(folder_lock(out, "run folder"))
            return prepare(out, config, facts)

        try:
            prepared = distributed.agree(dist, take)
        except BaseException:
            stack.close()
            if created and dist.is_main and out.is_dir() and {p.name for p in out.iterdir()} <= {LOCK_FILE}:
                shutil.rmtree(out, ignore_errors=True)
            raise
        if dist.rank != 0 or config.resume:  # each rank's own data log, trimmed as rank 0 trimmed log.jsonl
            trim_jsonl(out / run_data_log(dist.rank), prepared["step"])
        yield prepared


def prepare(out: Path, config: TrainConfig, facts: dict) -> dict:
    """Rank 0, holding the folder's lock: refuse or clear what is there, and check a resume. `facts`: the
    schedules' world size, steps per epoch and total steps, compared with the checkpoint's."""
    # left by a run killed while writing; only the run's own: the folder may hold the user's files
    remove_stale_temporaries(out, lambda name: name in RUN_FILES or name.startswith(RUN_DATA_LOG_PREFIX))
    # the run's own files and folders (never the user's own files there)
    outputs = [out / name for name in (*RUN_FILES, RUN_TENSORBOARD_DIR) if (out / name).exists()]
    outputs += sorted(out.glob(RUN_DATA_LOG_GLOB))
    if outputs and not config.resume and not config.overwrite:
        names = ", ".join(p.name for p in outputs[:4]) + (", ..." if len(outputs) > 4 else "")
        raise UsageError(f"{out} already holds a training run ({names})",
                         "pass --resume to continue it, or --overwrite to start afresh (removes the run's "
                         "checkpoint, logs, loss.png, config.json and TensorBoard events), or choose another --out")
    if config.overwrite:
        for output in outputs:
            if output.is_dir() and not output.is_symlink():
                shutil.rmtree(output)
            else:
                output.unlink()
    changed: dict = {}
    step = 0
    path = out / CHECKPOINT_FILE
    if config.resume and path.is_file():
        try:
            meta = read_checkpoint(path, mmap=True)  # the run state: its tensors are not read
        except WtoursError as e:
            raise WtoursError(e.message, "pass --overwrite to start afresh (it removes that file), or choose "
                              "another --out") from e
        step = int(meta.get("step") or 0)
        if meta.get("config"):
            saved = {**flat_settings(meta["config"]), **(meta.get("schedule") or {})}
            changed = changes(saved, {**flat_settings(recorded(config)), **facts})
            if changed and not config.reschedule:
                raise UsageError(
                    f"--resume: settings differ from the checkpoint's run (step {step}): {describe(changed)}; "
                    "continuing would change its schedules mid-run",
                    f"resume with the run's own settings (wtours train --config {out / 'config.json'} --resume), "
                    f"or add --reschedule to recompute the schedules for the new settings from step {step} (the "
                    "change is logged), or start a new run with --overwrite or another --out")
    if config.resume:  # steps after the checkpoint are redone: each is logged once
        trim_jsonl(out / RUN_LOG_FILE, step)
    return {"changed": changed, "step": step}


def recorded(config: TrainConfig) -> dict:
    """config.json and the checkpoint's settings: --resume/--overwrite/--reschedule act on one invocation only,
    so `--config config.json` reruns the settings without them; each SPEC as wtours.redact.shown shows it (no
    credentials are stored: a SPEC with *** must be given again to --resume, wtours.clips.spec says so)."""
    return replace(config, resume=False, overwrite=False, reschedule=False,
                   shards=tuple(shown(spec) for spec in split_specs(config.shards))).to_dict()


def saved_workers(config: TrainConfig) -> int | None:
    """--resume without --workers: the run's own worker count (it decides which clips form each batch)."""
    saved = read_json(Path(config.out) / RUN_CONFIG_FILE) if config.resume else None
    workers = saved.get("workers") if isinstance(saved, dict) else None
    return int(workers) if is_number(workers, int) and workers >= 0 else None


def reschedules(out: Path, changed: dict, step: int) -> list[dict]:
    """run.json's history of --reschedule: the earlier ones up to `step`, and this one's `changed`."""
    try:
        earlier = json.loads((out / RUN_FACTS_FILE).read_text(encoding="utf-8")).get("reschedules", [])
    except (OSError, ValueError, AttributeError):
        earlier = []
    earlier = [r for r in earlier if isinstance(r, dict) and r.get("step", 0) <= step]
    return earlier + ([{"step": step, "changed": changed}] if changed else [])
