"""The corpus table: one row per analysed video, as CSV and Markdown, and plots comparing the videos."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wtours.layout import replace_atomically
from wtours.stats.report import save_figure

CSV_FILE = "corpus.csv"
MARKDOWN_FILE = "corpus.md"
PLOT_FILES = {"lightness": "corpus_lightness.png", "transitions": "corpus_transitions.png",
              "classes": "corpus_classes.png"}
# (column, header in Markdown, decimals)
COLUMNS = [
    ("video", "video", None),
    ("duration_s", "duration (s)", 1),
    ("frames", "frames analysed", 0),
    ("resolution", "resolution", None),
    ("fps", "fps", 2),
    ("lightness_mean", "L* mean", 1),
    ("lightness_min", "L* min", 1),
    ("lightness_max", "L* max", 1),
    ("cuts_per_hour", "cuts / h", 1),
    ("scene_changes_per_hour", "scene changes / h", 1),
    ("objects_per_frame", "objects / frame", 2),
    ("classes_per_frame", "classes / frame", 2),
    ("unique_classes", "unique classes", 0),
]


def corpus_row(summary: dict[str, Any]) -> dict[str, Any]:
    video, light = summary["video"], summary["lightness"]
    classes = summary.get("classes")
    return {
        "video": video["slug"],
        "duration_s": video["duration"],
        "frames": summary["frames"],
        "resolution": f"{video['width']}x{video['height']}",
        "fps": video["fps"],
        "lightness_mean": light["mean"],
        "lightness_min": light["min"],
        "lightness_max": light["max"],
        "cuts_per_hour": summary["cuts_per_hour"],
        "scene_changes_per_hour": summary["scene_changes_per_hour"],
        "objects_per_frame": classes["objects_per_frame_mean"] if classes else None,
        "classes_per_frame": classes["per_frame_mean"] if classes else None,
        "unique_classes": classes["unique"] if classes else None,
    }


def write_corpus(base: Path, summaries: list[dict[str, Any]]) -> dict[str, Path]:
    import pandas as pd

    table = pd.DataFrame([corpus_row(s) for s in summaries], columns=[c for c, _, _ in COLUMNS])
    table = table.sort_values("video").reset_index(drop=True)
    written = {"csv": base / CSV_FILE, "markdown": base / MARKDOWN_FILE}
    replace_atomically(written["csv"], lambda tmp: table.to_csv(tmp, index=False))
    replace_atomically(written["markdown"], lambda tmp: tmp.write_text(markdown(table), encoding="utf-8"))
    for name, file in PLOT_FILES.items():
        if name == "classes" and table["objects_per_frame"].isna().all():
            (base / file).unlink(missing_ok=True)
            continue
        save_figure(PLOTTERS[name](table), base / file)
        written[name] = base / file
    return written


def markdown(table: Any) -> str:
    lines = ["| " + " | ".join(header for _, header, _ in COLUMNS) + " |",
             "|" + "|".join("---" if digits is None else "---:" for _, _, digits in COLUMNS) + "|"]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_cell(row[column], digits) for column, _, digits in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any, digits: int | None) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value) if digits is None else f"{float(value):.{digits}f}"


def _figure(rows: int, height: float = 3.5):
    from matplotlib.figure import Figure

    return Figure(figsize=(max(6, 0.6 * rows + 3), height), dpi=100, layout="constrained")


def plot_lightness(table: Any):
    figure = _figure(len(table))
    axes = figure.subplots()
    x = np.arange(len(table))
    mean = table["lightness_mean"].to_numpy()
    spread = [mean - table["lightness_min"].to_numpy(), table["lightness_max"].to_numpy() - mean]
    axes.bar(x, mean, yerr=spread, capsize=3)
    axes.set_xticks(x, table["video"], rotation=45, ha="right")
    axes.set(ylabel="CIELAB L* (mean, min..max)", ylim=(0, 100), title="lightness per video")
    return figure


def plot_transitions(table: Any):
    figure = _figure(len(table))
    axes = figure.subplots()
    x = np.arange(len(table))
    axes.bar(x - 0.2, table["cuts_per_hour"], width=0.4, label="hard cuts / h")
    axes.bar(x + 0.2, table["scene_changes_per_hour"], width=0.4, label="gradual scene changes / h")
    axes.set_xticks(x, table["video"], rotation=45, ha="right")
    axes.set(ylabel="per hour", title="scene transitions per video")
    axes.legend(fontsize="small")
    return figure


def plot_classes(table: Any):
    figure = _figure(len(table))
    axes = figure.subplots()
    x = np.arange(len(table))
    axes.bar(x - 0.2, table["objects_per_frame"].fillna(0), width=0.4, label="objects / frame")
    axes.bar(x + 0.2, table["classes_per_frame"].fillna(0), width=0.4, label="classes / frame")
    axes.set_xticks(x, table["video"], rotation=45, ha="right")
    axes.set(ylabel="mean per frame", title="objects and classes per frame")
    axes.legend(fontsize="small")
    return figure


PLOTTERS = {"lightness": plot_lightness, "transitions": plot_transitions, "classes": plot_classes}
