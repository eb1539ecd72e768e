"""The shard index (docs/data-format.md), per-segment records, the run plan and the wids descriptor.

Workers write one record per finished segment under `_segments/`; the index is assembled from the
records once every segment has one, and written last, atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wtours import __version__
from wtours.errors import WtoursError
from wtours.layout import Layout, read_json, shard_name, write_json_atomic

INDEX_FORMAT = "wtours-shards"
INDEX_VERSION = 1
PLAN_FILE = "plan.json"
SEGMENTS_DIR = "_segments"
WIDS_SUFFIX = ".wids.json"


def plan_path(layout: Layout, slug: str) -> Path:
    return layout.shard_dir(slug) / PLAN_FILE


def segment_record_path(layout: Layout, slug: str, number: int) -> Path:
    return layout.shard_dir(slug) / SEGMENTS_DIR / shard_name(slug, number).replace(".tar", ".json")


def wids_path(layout: Layout, slug: str) -> Path:
    return layout.shard_dir(slug) / f"{slug}{WIDS_SUFFIX}"


def read_segment_record(layout: Layout, slug: str, number: int) -> dict[str, Any] | None:
    """A finished segment's record, if its shard (when it has one) is on disk with the recorded size."""
    record = read_json(segment_record_path(layout, slug, number))
    if record is None:
        return None
    if record["shard"]:
        path = layout.shard_dir(slug) / record["shard"]["name"]
        if not path.is_file() or path.stat().st_size != record["shard"]["bytes"]:
            return None
    return record


def build_index(video: dict[str, Any], params: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    records = sorted(records, key=lambda r: r["segment"]["number"])
    shards = [r["shard"] for r in records if r["shard"]]
    stretches = [stretch for r in records for stretch in r["blank_stretches"]]
    dropped: dict[str, int] = {}
    for record in records:
        for reason, count in record["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + count
    incomplete = [r for r in records if not r["complete"]]
    fps = params["fps"]
    index = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "video": video,
        "params": params,
        "shards": shards,
        "samples": sum(s["samples"] for s in shards),
        "dropped": dropped,
        "blank_stretches": _merge_stretch_list(stretches, gap=1.5 / fps),
        "complete": not incomplete,
        "created_by": f"wtours {__version__}",
    }
    if incomplete:
        first = incomplete[0]
        index["decoded_until"] = first["decoded_until"]
        index["errors"] = first["errors"]
    return index


def _merge_stretch_list(stretches: list[list[float]], gap: float) -> list[list[float]]:
    """Join per-segment [first, last] blank stretches that continue across a segment boundary."""
    merged: list[list[float]] = []
    for first, last in sorted(stretches):
        if merged and first - merged[-1][1] <= gap:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return merged


def wids_descriptor(slug: str, index: dict[str, Any]) -> dict[str, Any]:
    """A wids dataset description; shard URLs are relative to the descriptor's folder."""
    return {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": slug,
        "shardlist": [{"url": s["name"], "nsamples": s["samples"]} for s in index["shards"]],
    }


def write_index(layout: Layout, slug: str, index: dict[str, Any]) -> None:
    write_json_atomic(wids_path(layout, slug), wids_descriptor(slug, index))
    write_json_atomic(layout.index_path(slug), index)  # last: its presence means the set is complete


def load_index(layout: Layout, slug: str) -> dict[str, Any]:
    index = layout.read_index(slug)
    if index is None:
        raise WtoursError(f"{slug} has no shard index at {layout.index_path(slug)}",
                          f"run `wtours shard --city {slug}` first (a rerun resumes)")
    if index.get("format") != INDEX_FORMAT or index.get("version") != INDEX_VERSION:
        raise WtoursError(f"{layout.index_path(slug)} is not a version-{INDEX_VERSION} wtours index",
                          "reshard with this version of wtours (`wtours shard --overwrite`)")
    return index


def write_plan(layout: Layout, slug: str, plan: dict[str, Any], overwrite: bool) -> None:
    """Record what this shard set is made of; refuse to mix sets made from other inputs."""
    existing = read_json(plan_path(layout, slug))
    if existing is not None and existing != plan and not overwrite:
        changes = [k for k in ("video", "params", "segments") if existing.get(k) != plan.get(k)]
        detail = _describe_changes(existing, plan)
        raise WtoursError(
            f"{layout.shard_dir(slug)} holds shards made with other {' and '.join(changes)}: {detail}",
            "rerun with --overwrite to replace them, or keep the old parameters (a rerun resumes)")
    if existing != plan:
        write_json_atomic(plan_path(layout, slug), plan)


def _describe_changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    parts = []
    if old.get("video", {}).get("sha256") != new.get("video", {}).get("sha256"):
        parts.append("the source video changed (sha256 differs)")
    for key, value in new.get("params", {}).items():
        if old.get("params", {}).get(key) != value:
            parts.append(f"{key} {old.get('params', {}).get(key)} -> {value}")
    return ", ".join(parts) or "the plan differs"


def clear_shard_dir(layout: Layout, slug: str) -> None:
    """--overwrite: remove this slug's shards, records, plan and index (nothing else)."""
    folder = layout.shard_dir(slug)
    if not folder.is_dir():
        return
    for path in folder.glob(f"{slug}-*.tar"):
        path.unlink()
    for path in (folder / SEGMENTS_DIR).glob("*.json"):
        path.unlink()
    for path in (layout.index_path(slug), wids_path(layout, slug), plan_path(layout, slug)):
        path.unlink(missing_ok=True)
    for path in folder.glob(".*.tmp-*"):
        path.unlink()
