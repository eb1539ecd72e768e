"""Writing one video's outputs: frames.parquet, summary.json and PNG plots (<name>.png), each atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wtours.layout import STATS_SUMMARY_FILE, replace_atomically, write_json_atomic

FRAMES_FILE = "frames.parquet"
CLASS_PLOTS = ("classes", "objects")


def save_figure(figure: Any, path: Path) -> None:
    replace_atomically(path, lambda tmp: figure.savefig(tmp, format="png"))


def write_outputs(folder: Path, frames: Any, summary: dict[str, Any]) -> None:
    """Write the table, the plots and, last, the summary (its presence means the set is complete)."""
    replace_atomically(folder / FRAMES_FILE, lambda tmp: frames.to_parquet(tmp, index=False))
    for name, plot in PLOTTERS.items():
        path = folder / f"{name}.png"
        if name in CLASS_PLOTS and "classes" not in summary:
            path.unlink(missing_ok=True)  # left by an earlier run with classes: no longer true
        else:
            save_figure(plot(frames, summary), path)
    write_json_atomic(folder / STATS_SUMMARY_FILE, summary)


def new_figure(width: float = 10, height: float = 4, **grid: Any):
    """A figure and its axes (`grid`: the arguments of `Figure.subplots`)."""
    from matplotlib.figure import Figure  # the object API: no pyplot state, no global backend switch

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return figure, figure.subplots(**grid)


def _minutes(frames: Any) -> tuple[np.ndarray, str, float]:
    """The time axis: (x, its label, x per second)."""
    t = frames["t"].to_numpy()
    span = t[-1] - t[0] if len(t) else 0
    return (t / 60, "time (min)", 1 / 60) if span > 300 else (t, "time (s)", 1)


def plot_lightness(frames: Any, summary: dict[str, Any]):
    figure, (course, distribution) = new_figure(nrows=1, ncols=2, width_ratios=[4, 1], sharey=True)
    x, label, _ = _minutes(frames)
    course.fill_between(x, frames["lightness_p10"], frames["lightness_p90"], alpha=0.25, label="10th-90th percentile")
    course.plot(x, frames["lightness"], lw=1, label="mean L*")
    course.set(xlabel=label, ylabel="CIELAB L*", ylim=(0, 100), title=f"{summary['video'].get('slug', '')} lightness")
    course.legend(loc="lower left")
    histogram = summary["lightness"]["histogram"]
    edges = np.array(histogram["edges"])
    distribution.barh(edges[:-1], histogram["counts"], height=np.diff(edges), align="edge")
    distribution.set(xlabel="frames", title="distribution")
    return figure


def plot_change(frames: Any, summary: dict[str, Any]):
    figure, axes = new_figure()
    x, label, scale = _minutes(frames)
    axes.plot(x, frames["change"], lw=0.8, label="change to previous frame")
    axes.plot(x, frames["drift"], lw=0.8, alpha=0.7,
              label=f"drift over {summary['transition_params']['drift_window']:g} s")
    if "transnetv2" in frames:
        axes.plot(x, frames["transnetv2"], lw=0.8, color="purple", alpha=0.6, label="TransNetV2 probability")
    marks, title = _cut_marks(summary)
    labelled = set()
    for t, colour, style, legend in marks:
        axes.axvline(t * scale, color=colour, lw=0.8, ls=style, label=None if legend in labelled else legend)
        labelled.add(legend)
    for i, segment in enumerate(summary["scene_change_segments"]):
        axes.axvspan(segment["start"] * scale, segment["end"] * scale, color="orange", alpha=0.15,
                     label="gradual scene change" if i == 0 else None)
    axes.axhline(summary["transition_params"]["cut_min"], color="grey", lw=0.6, ls=":", label="cut floor")
    axes.set(xlabel=label, ylim=(0, 1.02),
             ylabel="distance, probability (0..1)" if "cut_agreement" in summary else "histogram distance (0..1)",
             title=f"{title}{len(summary['scene_changes'])} gradual scene changes")
    axes.legend(loc="upper right", fontsize="small")
    return figure


def _cut_marks(summary: dict[str, Any]) -> tuple[list[tuple[float, str, str, str]], str]:
    """Cut lines (time, colour, line style, legend) and the title's start: with two detectors, each cut is drawn by
    who found it (solid red: both; dashed red: built-in only; dashed purple: TransNetV2 only)."""
    if "cut_agreement" not in summary:
        return [(t, "red", "--", "hard cut") for t in summary["cuts"]], f"{len(summary['cuts'])} cuts, "
    agree = summary["cut_agreement"]
    marks = [(t, "red", "-", "cut: both") for t, _ in agree["both"]]
    marks += [(t, "red", "--", "cut: built-in only") for t in agree["builtin_only"]]
    marks += [(t, "purple", "--", "cut: TransNetV2 only") for t in agree["transnetv2_only"]]
    return marks, (f"cuts: {len(agree['both'])} both, {len(agree['builtin_only'])} built-in only, "
                   f"{len(agree['transnetv2_only'])} TransNetV2 only (within {agree['tolerance']:g} s); ")


def plot_classes(frames: Any, summary: dict[str, Any]):
    top = summary["classes"]["top"]
    figure, axes = new_figure(8, max(2.5, 0.3 * len(top) + 1))
    names = [row["name"] for row in top][::-1]
    axes.barh(names, [row["frame_share"] * 100 for row in top][::-1])
    axes.set(xlabel="% of frames showing the class",
             title=f"top {len(top)} of {summary['classes']['unique']} classes ({summary['classes']['detector']})")
    return figure


def plot_objects(frames: Any, summary: dict[str, Any]):
    figure, axes = new_figure(8, 4)
    objects = frames["objects"].to_numpy()
    from matplotlib.ticker import MaxNLocator

    axes.hist(objects, bins=np.arange(0, max(1, objects.max()) + 2) - 0.5, rwidth=0.85)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set(xlabel="objects detected in a frame", ylabel="frames",
             title=f"objects per frame: mean {objects.mean():.2f}, classes per frame: mean "
                   f"{summary['classes']['per_frame_mean']:.2f}")
    return figure


PLOTTERS = {"lightness": plot_lightness, "change": plot_change, "classes": plot_classes, "objects": plot_objects}
