"""What a data root holds: the manifest joined with what is downloaded, sharded and analysed."""

from __future__ import annotations

from typing import Any

from wtours.layout import Layout
from wtours.manifest import VideoEntry, load_manifest
from wtours.shard.index import ShardIndex
from wtours.units import format_duration, format_size
from wtours.video import read_video_info


def catalog(layout: Layout) -> list[dict[str, Any]]:
    """One row per manifest video and per video added to the root, manifest order first."""
    manifest = load_manifest()
    slugs = dict.fromkeys([*manifest.slugs, *layout.video_slugs(), *layout.sharded_slugs()])
    return [_row(layout, slug, manifest.get(slug)) for slug in slugs]


def _row(layout: Layout, slug: str, entry: VideoEntry | None) -> dict[str, Any]:
    info = read_video_info(layout, slug)
    probe = info.probe.to_dict() if info else {}
    index = ShardIndex.read(layout.index_path(slug))
    stated = entry.stated if entry else {}
    return {
        "slug": slug,
        "city": entry.city if entry else None,
        "kind": entry.kind if entry else "added",
        "id": entry.youtube_id if entry else (info.source_id if info else None),
        "downloaded": info is not None,
        "bytes": info.bytes if info else None,
        "duration": probe.get("duration"),
        "width": probe.get("width"),
        "height": probe.get("height"),
        "fps": probe.get("fps"),
        "sharded": index is not None,
        "shards": len(index.shards) if index else 0,
        "samples": index.samples if index else None,
        "shard_bytes": sum(s.bytes for s in index.shards) if index else None,
        "analysed": layout.stats_summary_path(slug).is_file(),
        # what the manifest says before a download: the authors' stated specs (a duration only where one is
        # published; `stated_duration_about`: an approximate one); sizes are not published
        "stated_duration": stated.get("duration"),
        "stated_duration_about": stated.get("duration_about"),
        "stated_width": stated.get("width"),
        "stated_height": stated.get("height"),
        "stated_fps": stated.get("fps"),
    }


STATED_MARK = "~"
LEGEND = (f"{STATED_MARK}: as the corpus manifest states it, before a download (a duration only where the authors "
          "published one; '-': unknown); video sizes are known once downloaded")


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned table; what comes from the manifest rather than the file is marked (LEGEND)."""
    headers = ["slug", "city", "id", "video", "duration", "resolution", "shards", "samples", "stats"]
    lines = [[r["slug"], r["city"] or "-", r["id"] or "-",
              format_size(r["bytes"] or 0) if r["downloaded"] else "-",
              _duration(r), _resolution(r),
              f"{r['shards']} ({format_size(r['shard_bytes'] or 0)})" if r["sharded"] else "-",
              str(r["samples"]) if r["sharded"] else "-",
              "yes" if r["analysed"] else "-"] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    if any(STATED_MARK in cell for line in lines for cell in line[4:6]):
        out.append(LEGEND)
    return "\n".join(out)


def _duration(row: dict[str, Any]) -> str:
    if row["duration"]:
        return format_duration(row["duration"])
    if row["stated_duration"]:
        return STATED_MARK + format_duration(row["stated_duration"])
    if row["stated_duration_about"]:
        return f"{STATED_MARK}{format_duration(row['stated_duration_about'])} (about)"
    return "-"


def _resolution(row: dict[str, Any]) -> str:
    if row["width"]:
        return f"{row['width']}x{row['height']}@{row['fps']:.0f}"
    if row["stated_width"]:
        return f"{STATED_MARK}{row['stated_width']}x{row['stated_height']}@{row['stated_fps']:.0f}"
    return "-"

