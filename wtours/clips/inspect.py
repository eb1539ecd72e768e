"""What a SPEC holds: shards, frames, time covered, gaps, and clips per epoch."""

from __future__ import annotations

from typing import Any

from wtours.clips.epoch import ClipConfig, clips_per_epoch
from wtours.clips.spec import ShardRef


def describe(shards: list[ShardRef], config: ClipConfig) -> dict[str, Any]:
    videos: dict[str, dict[str, Any]] = {}
    for ref in shards:
        video = videos.setdefault(ref.slug, {"shards": 0, "frames": 0, "seconds": 0.0, "gaps": [], "fps": ref.fps,
                                             "_last": None})
        video["shards"] += 1
        video["frames"] += ref.samples
        for first, last in ref.cell_runs:
            video["seconds"] += (last - first + 1) / ref.fps
            if video["_last"] is not None and first > video["_last"] + 1:
                video["gaps"].append([round((video["_last"] + 1) / ref.fps, 3), round(first / ref.fps, 3)])
            video["_last"] = last
    for video in videos.values():
        del video["_last"]
    return {
        "shards": len(shards),
        "frames": sum(r.samples for r in shards),
        "seconds": sum(v["seconds"] for v in videos.values()),
        "videos": videos,
        "clip_frames": config.frames,
        "clip_stride": config.stride,
        "clips_per_shard": config.clips_per_shard,
        "clips_per_epoch": clips_per_epoch(shards, config),
    }


def format_description(info: dict[str, Any]) -> str:
    lines = [f"{info['shards']} shards, {info['frames']} frames, {info['seconds'] / 60:.1f} min of video covered"]
    for slug, v in info["videos"].items():
        gaps = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in v["gaps"]) or "none"
        lines.append(f"  {slug}: {v['shards']} shards, {v['frames']} frames at {v['fps']:g} fps, "
                     f"{v['seconds'] / 60:.1f} min; dropped stretches (gaps): {gaps}")
    per_shard = f", at most {info['clips_per_shard']} per shard" if info["clips_per_shard"] else ""
    lines.append(f"clips per epoch: {info['clips_per_epoch']} ({info['clip_frames']} frames, "
                 f"{info['clip_stride']:g} s apart{per_shard})")
    return "\n".join(lines)
