"""One video's per-frame table -> transitions over the whole video, lightness course, class table, summary."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from wtours import __version__
from wtours.layout import sample_key
from wtours.stats.classes import class_table
from wtours.stats.frames import SourceInfo
from wtours.stats.lightness import video_lightness
from wtours.stats.measure import grid_step
from wtours.stats.params import StatsConfig
from wtours.stats.transitions import (
    agreement,
    change_scores,
    detect_cuts,
    detect_scene_changes,
    drift_scores,
    gaps,
    shots,
)
from wtours.stats.transnet import cuts_from_probabilities

SUMMARY_FORMAT = "wtours-stats"
SUMMARY_VERSION = 1
# Columns other tools rely on come first in frames.parquet (docs/stats.md lists them all): `__key__` and `video`
# join a row to its shard sample (webdataset's and `datasets`' `__key__`, the sample json's `video`).
KEY_COLUMN = "__key__"
LEADING_COLUMNS = [KEY_COLUMN, "video", "t", "frame", "lightness", "change", "objects", "classes"]


def summarise(slug: str, table: Any, hists: np.ndarray, info: SourceInfo, config: StatsConfig,
              detector: dict[str, Any] | None, transnet: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """(per-frame table from the parts, (N, BINS) histograms) -> (frames table to write, summary dict).

    `transnet`: {"package", "probability": (N,) TransNetV2's per-frame output} when --cuts transnetv2 ran."""
    t = table["t"].to_numpy(dtype=np.float64)
    change = change_scores(hists)  # hists stay (N, BINS) uint16: the scores normalise block by block
    cuts = detect_cuts(t, change, hists, config.transitions)
    after_gap = gaps(t, info.every)
    shot = shots(len(t), cuts, after_gap)
    drift, reference = drift_scores(t, hists, table["lightness"].to_numpy(), shot, config.transitions)
    changes = detect_scene_changes(t, drift, reference, config.transitions)

    keys = [sample_key(slug, int(frame)) for frame in table["frame"]]  # the shards' key of the same frame
    frames = table.assign(change=change, drift=drift, shot=shot, cut=np.isin(np.arange(len(t)), cuts),
                          **{KEY_COLUMN: keys, "video": slug})
    frames = frames[[c for c in LEADING_COLUMNS if c in frames] + [c for c in frames if c not in LEADING_COLUMNS]]
    hours = (t[-1] - t[0] + info.every) / 3600  # time the analysed frames stand for
    width, height = info.frame_size
    step = grid_step(height, width, config.analysis.analysis_pixels)  # the grid L* and histograms are measured on
    summary: dict[str, Any] = {
        "format": SUMMARY_FORMAT,
        "version": SUMMARY_VERSION,
        "video": {"slug": slug, **info.video},
        "source": {"kind": info.kind, "every": info.every, "frame_size": list(info.frame_size),
                   "analysis_grid": [len(range(0, side, step)) for side in info.frame_size], "complete": info.complete,
                   "notes": info.notes, "skipped_shards": list(info.skipped)},
        "frames": int(len(t)),
        "span": [float(t[0]), float(t[-1])],
        "hours": hours,
        "lightness": video_lightness(t, frames["lightness"].to_numpy()),
        "change": {"mean": _stat(np.nanmean, change), "median": _stat(np.nanmedian, change),
                   "p99": _stat(lambda x: np.nanpercentile(x, 99), change)},
        "cuts": [float(t[i]) for i in cuts],
        "cuts_per_hour": len(cuts) / hours,
        "scene_changes": [c.t for c in changes],
        "scene_change_segments": [{"start": c.start, "end": c.end, "drift": round(c.drift, 4)} for c in changes],
        "scene_changes_per_hour": len(changes) / hours,
        "shots": int(shot[-1]) + 1,
        "gaps": [[float(t[i - 1]), float(t[i])] for i in after_gap],
        "transition_params": asdict(config.transitions),
        "created_by": f"wtours {__version__}",
    }
    if transnet is not None:
        frames = _compare_cuts(frames, summary, transnet, config)
    if detector is not None:
        table = class_table(frames["labels"])
        summary["classes"] = {
            **detector,
            "unique": len(table),
            "per_frame_mean": float(frames["classes"].mean()),
            "objects_per_frame_mean": float(frames["objects"].mean()),
            "objects_per_frame_max": int(frames["objects"].max()),
            "top": table[:config.top],
            "table": table,
        }
    return frames, summary


def _compare_cuts(frames: Any, summary: dict[str, Any], transnet: dict[str, Any], config: StatsConfig) -> Any:
    """TransNetV2's cuts (its per-frame probability and cut flags join the table) and their agreement with the
    built-in detector's."""
    t = frames["t"].to_numpy(dtype=np.float64)
    params = config.cut_detectors
    probability = np.asarray(transnet["probability"], dtype=np.float64)  # (N,)
    cuts = cuts_from_probabilities(t, probability, params.transnetv2_threshold, config.transitions.min_gap)
    summary["transnetv2"] = {"package": transnet["package"], "threshold": params.transnetv2_threshold,
                             "cuts": [float(t[i]) for i in cuts], "cuts_per_hour": len(cuts) / summary["hours"]}
    agree = agreement(summary["cuts"], summary["transnetv2"]["cuts"], params.cut_tolerance)
    summary["cut_agreement"] = {"tolerance": agree.tolerance, "both": [list(pair) for pair in agree.both],
                                "builtin_only": agree.first_only, "transnetv2_only": agree.second_only}
    return frames.assign(transnetv2=probability, transnetv2_cut=np.isin(np.arange(len(t)), cuts))


def _stat(function, values: np.ndarray) -> float | None:
    return float(function(values)) if np.isfinite(values).any() else None
