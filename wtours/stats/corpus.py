"""The corpus table: one row per analysed video, as CSV and Markdown, and plots comparing the videos
(corpus_<name>.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wtours.layout import replace_atomically
from wtours.stats.report import new_figure, save_figure

CSV_FILE = "corpus.csv"
MARKDOWN_FILE = "corpus.md"
CLASSES_FILE = "corpus_classes.csv"  # the corpus's class table (when classes were counted)
CORPUS_ROW = "(corpus)"  # the last row when classes were counted: no slug has parentheses
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
    # --cuts transnetv2: its cuts and their agreement with the built-in detector's (empty where it did not run)
    ("transnetv2_cuts_per_hour", "TransNetV2 cuts / h", 1),
    ("cuts_both", "cuts found by both", 0),
    ("cuts_builtin_only", "built-in only", 0),
    ("cuts_transnetv2_only", "TransNetV2 only", 0),
]
# The plots of two columns side by side: ((column, legend) left and right of each video, y label, title).
PAIRS = {
    "transitions": ((("cuts_per_hour", "hard cuts / h"), ("scene_changes_per_hour", "gradual scene changes / h")),
                    "per hour", "scene transitions per video"),
    "classes": ((("objects_per_frame", "objects / frame"), ("classes_per_frame", "classes / frame")),
                "mean per frame", "objects and classes per frame"),
}


def corpus_row(summary: dict[str, Any]) -> dict[str, Any]:
    video, light = summary["video"], summary["lightness"]
    classes = summary.get("classes")
    agree = summary.get("cut_agreement")  # only where --cuts transnetv2 ran
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
        "transnetv2_cuts_per_hour": summary["transnetv2"]["cuts_per_hour"] if agree else None,
        "cuts_both": len(agree["both"]) if agree else None,
        "cuts_builtin_only": len(agree["builtin_only"]) if agree else None,
        "cuts_transnetv2_only": len(agree["transnetv2_only"]) if agree else None,
        "objects_per_frame": classes["objects_per_frame_mean"] if classes else None,
        "classes_per_frame": classes["per_frame_mean"] if classes else None,
        "unique_classes": classes["unique"] if classes else None,
    }


def corpus_union(summaries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The whole corpus as one row (`CORPUS_ROW`): durations and frames summed, objects and classes per frame
    over all frames, and `unique_classes` the union of the videos' classes; None when no video counted classes."""
    counted = [s for s in summaries if s.get("classes")]
    if not counted:
        return None
    frames = sum(s["frames"] for s in counted)
    union = {row["name"] for s in counted for row in s["classes"]["table"]}
    return {"video": CORPUS_ROW, "duration_s": sum(s["video"]["duration"] for s in counted), "frames": frames,
            "objects_per_frame": sum(s["classes"]["objects_per_frame_mean"] * s["frames"] for s in counted) / frames,
            "classes_per_frame": sum(s["classes"]["per_frame_mean"] * s["frames"] for s in counted) / frames,
            "unique_classes": len(union)}


def corpus_class_table(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per class over the videos that counted classes: objects, frames showing it, its share of all their
    frames and the videos it appears in; most frequent first (the per-video table's order)."""
    counted = [s for s in summaries if s.get("classes")]
    total = sum(s["frames"] for s in counted)
    rows: dict[str, dict[str, Any]] = {}
    for summary in counted:
        for row in summary["classes"]["table"]:
            merged = rows.setdefault(row["name"], {"name": row["name"], "objects": 0, "frames": 0, "videos": 0})
            merged["objects"] += row["objects"]
            merged["frames"] += row["frames"]
            merged["videos"] += 1
    for row in rows.values():
        row["frame_share"] = round(row["frames"] / total, 6)
    return sorted(rows.values(), key=lambda r: (-r["frames"], -r["objects"], r["name"]))


def write_corpus(base: Path, summaries: list[dict[str, Any]]) -> dict[str, Path]:
    import pandas as pd

    table = pd.DataFrame([corpus_row(s) for s in summaries], columns=[c for c, _, _ in COLUMNS])
    table = table.sort_values("video").reset_index(drop=True)
    if (union := corpus_union(summaries)) is not None:  # last: the classes the videos show together
        table = pd.concat([table, pd.DataFrame([union], columns=table.columns)], ignore_index=True)
    written = {"csv": base / CSV_FILE, "markdown": base / MARKDOWN_FILE}
    replace_atomically(written["csv"], lambda tmp: table.to_csv(tmp, index=False))
    replace_atomically(written["markdown"], lambda tmp: tmp.write_text(markdown(table), encoding="utf-8"))
    if union is None:
        (base / CLASSES_FILE).unlink(missing_ok=True)  # left by an earlier comparison with classes: no longer true
    else:
        classes = pd.DataFrame(corpus_class_table(summaries), columns=["name", "objects", "frames", "frame_share",
                                                                       "videos"])
        written["classes_csv"] = base / CLASSES_FILE
        replace_atomically(written["classes_csv"], lambda tmp: classes.to_csv(tmp, index=False))
    videos = table[table["video"] != CORPUS_ROW]
    for name in ("lightness", *PAIRS, "unique_classes"):
        path = base / f"corpus_{name}.png"
        if name in ("classes", "unique_classes") and union is None:
            path.unlink(missing_ok=True)
            continue
        save_figure(plot(videos, name) if name != "unique_classes" or union is None else plot_unique(videos, union),
                    path)
        written[name] = path
    return written


# Shown in corpus.md only where some video has them (corpus.csv keeps every column, empty where not run)
WHERE_RUN = {"transnetv2_cuts_per_hour", "cuts_both", "cuts_builtin_only", "cuts_transnetv2_only"}


def markdown(table: Any) -> str:
    columns = [c for c in COLUMNS if c[0] not in WHERE_RUN or any(_cell(v, c[2]) for v in table[c[0]])]
    lines = ["| " + " | ".join(header for _, header, _ in columns) + " |",
             "|" + "|".join("---" if digits is None else "---:" for _, _, digits in columns) + "|"]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_cell(row[column], digits) for column, _, digits in columns) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any, digits: int | None) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value) if digits is None else f"{float(value):.{digits}f}"


def plot(table: Any, name: str):
    """The videos side by side: "lightness" (mean, min..max), or the two columns of one of `PAIRS`."""
    figure, axes = new_figure(max(6, 0.6 * len(table) + 3), 3.5)
    x = np.arange(len(table))
    if name == "lightness":
        mean = table["lightness_mean"].to_numpy()
        spread = [mean - table["lightness_min"].to_numpy(), table["lightness_max"].to_numpy() - mean]
        axes.bar(x, mean, yerr=spread, capsize=3)
        axes.set(ylabel="CIELAB L* (mean, min..max)", ylim=(0, 100), title="lightness per video")
    else:
        columns, ylabel, title = PAIRS[name]
        for offset, (column, label) in zip((-0.2, 0.2), columns):
            axes.bar(x + offset, table[column].fillna(0), width=0.4, label=label)
        axes.set(ylabel=ylabel, title=title)
        axes.legend(fontsize="small")
    axes.set_xticks(x, table["video"], rotation=45, ha="right")
    return figure


def plot_unique(videos: Any, union: dict[str, Any]):
    """Unique classes per video, and the union over the corpus as a line."""
    figure, axes = new_figure(max(6, 0.6 * len(videos) + 3), 3.5)
    x = np.arange(len(videos))
    axes.bar(x, videos["unique_classes"].fillna(0), label="classes seen in the video")
    axes.axhline(union["unique_classes"], color="black", lw=1, ls="--",
                 label=f"corpus: {union['unique_classes']} classes (union)")
    axes.set(ylabel="unique classes", title="classes per video and in the whole corpus")
    axes.legend(fontsize="small")
    axes.set_xticks(x, videos["video"], rotation=45, ha="right")
    return figure
