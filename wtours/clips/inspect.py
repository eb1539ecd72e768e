"""What a SPEC holds: shards, frames, time covered, gaps, and clips per epoch."""

from __future__ import annotations

import os
from typing import Any

from wtours.clips.epoch import ClipConfig, clips_per_epoch, plan_epoch
from wtours.clips.spec import ShardRef
from wtours.shard.index import ShardIndex
from wtours.streams import url_scheme
from wtours.units import format_duration


def describe(shards: list[ShardRef], config: ClipConfig, world_size: int = 1, workers: int = 1,
             batch_size: int = 1, epoch: int = 0, sets: list[tuple[str, ShardIndex]] | None = None
             ) -> dict[str, Any]:
    """What the shards hold, and what one epoch reads with `world_size` ranks x `workers` DataLoader
    workers at `batch_size` clips per step: distinct clips, clips read (with the padding that gives
    every rank the same steps), steps per rank. `sets` (folder, index): whether each index is complete.
    Local shard files the index lists but the disk lacks are listed under `missing`."""
    videos: dict[str, dict[str, Any]] = {}
    last_cell: dict[str, int] = {}  # per video: the last cell of the runs so far
    for ref in shards:
        video = videos.setdefault(ref.slug, {"shards": 0, "frames": 0, "seconds": 0.0, "gaps": [], "fps": ref.fps})
        video["shards"] += 1
        video["frames"] += ref.entry.samples
        for first, last in ref.entry.cell_runs:
            video["seconds"] += (last - first + 1) / ref.fps
            if ref.slug in last_cell and first > last_cell[ref.slug] + 1:
                video["gaps"].append([round((last_cell[ref.slug] + 1) / ref.fps, 3), round(first / ref.fps, 3)])
            last_cell[ref.slug] = last
    incomplete = []
    for _, index in sets or ():
        if index.slug in videos:
            videos[index.slug]["complete"] = index.complete
            videos[index.slug]["privacy"] = index.privacy  # None: frames stored as decoded, faces not blurred
            videos[index.slug]["blank"] = blank_report(index)
            if not index.complete:
                videos[index.slug]["decoded_until"] = index.decoded_until
                incomplete.append(index.slug)
    missing = [r.url for r in shards if url_scheme(r.url) is None and not os.path.isfile(r.url)]  # paths only
    per_epoch = clips_per_epoch(shards, config)
    plan = plan_epoch(shards, config, epoch, world_size, max(1, workers), batch_size)
    slot_clips = [s.clips for s in plan.slots]
    return {
        "complete": not incomplete,
        "incomplete_videos": incomplete,
        "missing": missing,
        "shards": len(shards),
        "frames": sum(r.entry.samples for r in shards),
        "seconds": sum(v["seconds"] for v in videos.values()),
        "videos": videos,
        "clip_frames": config.frames,
        "clip_stride": config.stride,
        "clips_per_shard": config.clips_per_shard,
        "clips_per_epoch": per_epoch,
        "world_size": world_size, "workers": workers, "batch_size": batch_size,
        "clips_read_per_epoch": plan.clips_read, "steps_per_epoch": plan.steps,
        "slot_clips": [min(slot_clips), max(slot_clips)],
        "shards_per_slot": max(len({r.ref.url for r in plan.reads(i)}) for i in range(len(plan.slots))),
    }


def format_description(info: dict[str, Any]) -> str:
    lines = [f"{info['shards']} shards, {info['frames']} frames, {info['seconds'] / 60:.1f} min of video covered"]
    for slug, v in info["videos"].items():
        gaps = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in v["gaps"]) or "none"
        lines.append(f"  {slug}: {v['shards']} shards, {v['frames']} frames at {v['fps']:g} fps, "
                     f"{v['seconds'] / 60:.1f} min; dropped stretches (gaps): {gaps}")
        if "blank" in v:
            lines.append(f"  {slug}: {blank_line(v['blank'])}")
        if "privacy" in v:
            lines.append(f"  {slug}: {privacy_line(v['privacy'], v['frames'])}")
        if v.get("complete") is False:
            lines.append(f"  {slug}: WARNING: incomplete index (complete: false): decoding stopped at "
                         f"{v['decoded_until']:.2f} s (damaged or truncated video)")
    if info.get("missing"):
        shown = ", ".join(info["missing"][:5]) + (" ..." if len(info["missing"]) > 5 else "")
        lines.append(f"WARNING: {len(info['missing'])} shard file(s) listed in the index are missing: {shown} "
                     "(`wtours verify --repair` reshards them)")
    per_shard = f", at most {info['clips_per_shard']} per shard" if info["clips_per_shard"] else ""
    lines.append(f"clips per epoch: {info['clips_per_epoch']} ({info['clip_frames']} frames, "
                 f"{info['clip_stride']:g} s apart{per_shard})")
    lines.append(f"read per epoch by {info['world_size']} rank(s) x {info['workers']} worker(s) at batch size "
                 f"{info['batch_size']}: {info['clips_read_per_epoch']} clips "
                 f"({info['clips_read_per_epoch'] - info['clips_per_epoch']} padding), "
                 f"{info['steps_per_epoch']} steps per rank; {info['slot_clips'][0]}-{info['slot_clips'][1]} "
                 f"distinct clips per worker, at most {info['shards_per_slot']} shard(s) each")
    return "\n".join(lines)


def blank_report(index: ShardIndex) -> dict[str, Any]:
    """The set's blank frames (dropped by `wtours shard`, index.json's `blank_stretches`) as stretches with times,
    each marked `tail` when it runs to the video's end; and `tail`: the end of the video no shard covers, with why
    (blank, --end, decoding stopped), None when the shards reach the end. Times in seconds of the video."""
    cell = 1 / index.fps
    duration = index.video.duration
    stretches = []
    for start, last in index.blank_stretches:  # `last`: the last blank cell's time; the stretch ends a cell later
        end = min(last + cell, duration)
        stretches.append({"start": start, "end": end, "seconds": round(end - start, 3),
                          "tail": last + 1.5 * cell >= duration})
    covered = max((last + 1 for s in index.shards for _, last in s.cell_runs), default=0) * cell
    tail = None
    if duration - covered > 1.5 * cell:
        why = ("blank" if stretches and stretches[-1]["tail"]
               else "--end" if index.params.end is not None and index.params.end < duration
               else "decoding stopped" if not index.complete else "no frames kept")
        tail = {"start": round(covered, 3), "end": duration, "why": why}
    return {"frames": index.dropped.get("blank", 0), "stretches": stretches, "tail": tail}


def blank_line(blank: dict[str, Any]) -> str:
    """'blank: none', or the blank stretches with their times (a tail named) and what the shards leave uncovered
    at the end."""
    stretches = blank["stretches"]
    seconds = sum(s["seconds"] for s in stretches)
    shown = [f"{format_duration(s['start'])}-{format_duration(s['end'])}" + (" (tail, to the end)" * s["tail"])
             for s in stretches[:8]]
    more = f" ... ({len(stretches) - 8} more; --json lists them)" if len(stretches) > 8 else ""
    text = (f"blank: {blank['frames']} frames dropped in {len(stretches)} stretch(es), {format_duration(seconds)}: "
            + ", ".join(shown) + more) if stretches else "blank: none"
    tail = blank["tail"]
    if tail:
        text += (f"; shards end at {format_duration(tail['start'])} of {format_duration(tail['end'])} "
                 f"({tail['why']})")
    return text


def privacy_line(privacy: dict[str, Any] | None, frames: int) -> str:
    """One line on whether (and how) faces were blurred, from an index's `privacy` block."""
    if not privacy:
        return "faces: not blurred (frames stored as decoded; `wtours blur-faces` or `wtours shard --blur-faces`)"
    return (f"faces: blurred ({privacy['mode']}) by {privacy['detector']} at threshold {privacy['threshold']:g}: "
            f"{privacy['faces']} faces in {privacy['frames_with_faces']} of {frames} frames")
