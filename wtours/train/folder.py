"""The run folder: what a run writes there, and what a new run does with a run already there.

One run at a time holds the folder (wtours.locks.folder_lock, taken by rank 0; see
docs/troubleshooting.md, "Training runs"). Without --resume or --overwrite a folder holding a run is
refused; --overwrite removes only the files a run writes; --resume refuses changed settings that
shape the schedules or the data unless --reschedule is given. Nothing here needs torch's process
group: rank 0 decides and wtours.train.distributed.agree tells the other ranks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from wtours.config import flagged
from wtours.errors import UsageError, WtoursError
from wtours.layout import CHECKPOINT_FILE, RUN_CONFIG_FILE, RUN_FILES, TEMPORARY_GLOB, read_json, write_bytes_atomic

RUN_PATTERNS = ("data.rank*.jsonl",)
RUN_DIRS = ("tensorboard",)


def free_settings() -> frozenset[str]:
    """Settings that do not change what the run computes, or only how fast: free to change on --resume
    (TrainConfig's fields with the metadata flag "free"). Not "workers": each loader worker reads its own
    stretch of the epoch, so the worker count decides which clips make up each batch, and a resume with
    another count would repeat some clips and skip others."""
    from wtours.train.config import TrainConfig

    return flagged(TrainConfig, "free")


# What the schedules and the data order follow beyond the settings: compared on --resume too.
DERIVED = {"world_size": "processes (world size)", "steps_per_epoch": "steps per epoch",
           "total_steps": "total steps"}


def run_outputs(out: Path) -> list[Path]:
    """The files and folders of a run in `out` (never the user's own files there)."""
    if not out.is_dir():
        return []
    found = [out / name for name in (*RUN_FILES, *RUN_DIRS) if (out / name).exists()]
    for pattern in RUN_PATTERNS:
        found += sorted(out.glob(pattern))
    return found


def stale_temporaries(out: Path) -> list[Path]:
    """Temporaries of the atomic writer (`.NAME.tmp-PID-TID`) left by a killed run: safe to remove
    while the folder is locked, since no other run writes there."""
    if not out.is_dir():
        return []
    names = set(RUN_FILES)
    return [p for p in out.glob(TEMPORARY_GLOB)  # only the run's own: the folder may hold the user's files
            if p.name[1:].split(".tmp-")[0] in names or p.name[1:].startswith("data.rank")]


def remove_outputs(out: Path) -> None:
    for path in run_outputs(out):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def refuse_existing(out: Path, resume: bool, overwrite: bool) -> None:
    outputs = run_outputs(out)
    if outputs and not resume and not overwrite:
        names = ", ".join(p.name for p in outputs[:4]) + (", ..." if len(outputs) > 4 else "")
        raise UsageError(f"{out} already holds a training run ({names})",
                         "pass --resume to continue it, or --overwrite to start afresh (removes the run's "
                         "checkpoint, logs, config.json and TensorBoard events), or choose another --out")


def flat_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A nested config dict (as config.json) by leaf name, JSON-normalised (tuples -> lists)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flat_settings(value))
        else:
            flat[key] = json.loads(json.dumps(value))
    return flat


def changes(saved: dict[str, Any], now: dict[str, Any]) -> dict[str, list]:
    """{name: [checkpoint's, this run's]} for every schedule- or data-shaping setting that differs
    (names missing on one side, as in an older checkpoint, are not compared)."""
    out, free = {}, free_settings()
    for key, value in now.items():
        if key in free or key not in saved:
            continue
        if saved[key] != value:
            out[key] = [saved[key], value]
    return out


def describe(changed: dict[str, list]) -> str:
    def name(key: str) -> str:
        return DERIVED.get(key) or "--" + key.replace("_", "-")

    return ", ".join(f"{name(k)} {old} -> {new}" for k, (old, new) in changed.items())


def refuse_changes(out: Path, step: int, changed: dict[str, list]) -> None:
    raise UsageError(
        f"--resume: settings differ from the checkpoint's run (step {step}): {describe(changed)}; continuing "
        "would change its schedules mid-run",
        f"resume with the run's own settings (wtours train --config {out / 'config.json'} --resume), or add "
        f"--reschedule to recompute the schedules for the new settings from step {step} (the change is logged), "
        "or start a new run with --overwrite or another --out")


def trim_jsonl(path: Path, last_step: int) -> None:
    """Drop the lines after `last_step` (and a torn last line) from a run's .jsonl: a resumed run
    redoes those steps, so each step is logged once."""
    if not path.is_file():
        return
    kept, changed = [], False
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            record = json.loads(line)
            keep = line.endswith("\n") and record.get("step", 0) <= last_step
        except ValueError:
            keep = False
        if keep:
            kept.append(line)
        changed |= not keep
    if changed:
        write_bytes_atomic(path, "".join(kept).encode("utf-8"))


# ---------------------------------------------------------------- --resume: the run's own model


# The settings the checkpoint's weights are shaped by: no --reschedule can change them on --resume.
WEIGHT_SHAPES = ("arch", "out_dim", "hidden_dim", "bottleneck_dim")


def resumed_model_settings(given: dict[str, Any]) -> dict[str, Any]:
    """For `wtours train --resume`: the run's model settings (architecture, sizes, head, loss, ...), nested
    as TrainConfig's `model`, to be the layer under --config/--set/options, so a resume without them
    continues the run's own model and only values given explicitly can differ. They come from the
    checkpoint's own saved settings (its "config" entry: the weights' true shapes, also in a folder that
    holds only a copied checkpoint), else from --out/config.json. {} when not resuming or when the folder
    records no model. `given` is what the command was given (wtours.config.command_settings)."""
    from wtours.config import build_dict, coerce
    from wtours.train.config import TrainConfig

    try:
        resume = coerce(given.get("resume", False), bool, "resume")
        out = coerce(given.get("out"), str, "out") if given.get("out") is not None else None
    except WtoursError:
        return {}  # building the config names the bad value
    if not resume or not out:
        return {}
    checkpoint = Path(out) / CHECKPOINT_FILE
    saved: Any = checkpoint_settings(checkpoint)
    where = checkpoint
    if saved is None:
        where = Path(out) / RUN_CONFIG_FILE
        if not where.is_file():
            return {}
        saved = read_json(where)
        if not isinstance(saved, dict):
            raise WtoursError(f"{where} is not a training run's config.json (no mapping of settings)",
                              f"--resume reads the run's model from it: restore it, or pass --overwrite to start "
                              f"afresh in {out}")
    model = build_dict(TrainConfig, saved, f" in {where}").get("model")  # nested, or flat by option name
    return {"model": model, SOURCE_KEY: str(where)} if model else {}


SOURCE_KEY = "_from"  # resumed_model_settings' note of the file the model came from (for refuse_reshaped_model)


def checkpoint_settings(path: Path) -> dict[str, Any] | None:
    """The run settings a wtours checkpoint saved (its "config" entry), or None: no checkpoint, or one
    without settings (the authors'), or an unreadable one (the run itself reports that). Memory-mapped:
    the weights are not read."""
    if not path.is_file():
        return None
    from wtours.models.checkpoint import read_checkpoint

    try:
        raw = read_checkpoint(path, mmap=True)
    except WtoursError:  # the run itself names an unreadable file
        return None
    config = raw.get("config") if isinstance(raw, dict) else None
    return json.loads(json.dumps(config, default=str)) if isinstance(config, dict) else None


def refuse_reshaped_model(run_model: dict[str, Any], model: dict[str, Any], out: str,
                          source: str | None = None) -> None:
    """--resume with an explicitly different architecture or head size: the checkpoint's weights do not
    fit that model, so --reschedule cannot accept it either. `source`: the file the run's model was read
    from (resumed_model_settings), named in the hint."""
    saved, now = flat_settings(run_model), flat_settings(model)
    changed = {k: [saved[k], now[k]] for k in WEIGHT_SHAPES if k in saved and k in now and saved[k] != now[k]}
    if changed:
        raise UsageError(f"--resume: {describe(changed)}: the run's checkpoint holds weights of another shape",
                         f"leave these options out to resume with the run's own model (from "
                         f"{source or Path(out) / CHECKPOINT_FILE}), or start a new run with --overwrite or another "
                         "--out")


def latest_checkpoint(out: Path) -> Path | None:
    path = out / CHECKPOINT_FILE
    return path if path.is_file() else None
