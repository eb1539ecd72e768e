"""`wtours shard`: a registered video -> time-contiguous WebDataset shards plus index.json."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from wtours import media
from wtours.download import completed_file
from wtours.errors import IncompleteError, WtoursError
from wtours.layout import Layout, sample_key, shard_name, write_json_atomic
from wtours.shard.blank import is_blank, merge_stretches
from wtours.shard.decode import SegmentDecoder
from wtours.shard.index import (build_index, clear_shard_dir, read_segment_record, segment_record_path,
                                write_index, write_plan)
from wtours.shard.params import RunOptions, ShardParams
from wtours.shard.plan import Segment, output_size, plan_segments
from wtours.shard.writer import ShardWriter, encode_jpeg, encode_json

PLAN_FORMAT = "wtours-shard-plan"


@dataclass(frozen=True)
class ShardJob:
    """What every segment of one video needs to know."""

    slug: str
    video_path: Path
    probe: media.ProbeResult
    source_id: str | None
    params: ShardParams
    size: tuple[int, int]  # output (width, height)
    hwaccel: str


@dataclass
class ShardSummary:
    slug: str
    segments_done: int = 0
    samples: int = 0
    shards: int = 0
    bytes: int = 0
    dropped: int = 0
    seconds: float = 0.0
    source_seconds: float = 0.0  # seconds of video decoded by this run
    index: dict[str, Any] | None = None
    missing_segments: int = 0  # segments other nodes still have to do

    def line(self, source_fps: float) -> str:
        rate = self.samples / self.seconds if self.seconds else 0.0
        decoded = self.source_seconds * source_fps / self.seconds if self.seconds else 0.0
        return (f"{self.slug}: {self.samples} frames in {self.shards} shards, {self.bytes / 1e6:.1f} MB, "
                f"{rate:.1f} frames/s written ({decoded:.0f} source frames/s decoded), {self.dropped} dropped, "
                f"{self.seconds:.1f} s")


def resolve_hwaccel(choice: str) -> str:
    if choice == "auto":
        return "cuda" if media.cuda_decoding_available() else "none"
    if choice == "cuda" and not media.cuda_decoding_available():
        raise WtoursError("--hwaccel cuda: this ffmpeg or machine has no CUDA decoding",
                          "use --hwaccel none (or auto), or an ffmpeg built with NVDEC on a machine with an NVIDIA GPU")
    return choice


def prepare_job(layout: Layout, slug: str, params: ShardParams, hwaccel: str) -> ShardJob:
    info = layout.read_info(slug)
    if info is None or "file" not in info:
        raise WtoursError(f"no video registered as {slug!r} under {layout.root}",
                          f"run `wtours download --city {slug}` or `wtours add FILE --name {slug}` first")
    path = layout.video_dir(slug) / info["file"]
    if not path.is_file():
        raise WtoursError(f"{path} is missing", f"download or add {slug} again")
    if completed_file(layout, slug) is None:
        raise WtoursError(f"{path} changed since it was recorded (size or checksum differ)",
                          f"register it again with `wtours add {path} --name {slug}` (or download it again)")
    probe = media.ProbeResult(**info["probe"])
    size = output_size(probe.width, probe.height, params.short_side)
    source_id = (info.get("source") or {}).get("id")
    return ShardJob(slug, path, probe, source_id, params, size, resolve_hwaccel(hwaccel))


def video_record(job: ShardJob, sha256: str) -> dict[str, Any]:
    p = job.probe
    return {"slug": job.slug, "source_id": job.source_id, "sha256": sha256, "duration": p.duration, "fps": p.fps,
            "width": p.width, "height": p.height}


def shard_video(layout: Layout, slug: str, params: ShardParams, options: RunOptions,
                say: Callable[[str], None] = print) -> ShardSummary:
    job = prepare_job(layout, slug, params, options.hwaccel)
    info = layout.read_info(slug)
    segments = plan_segments(job.probe, params)
    if not segments:
        raise WtoursError(f"{slug}: nothing to shard between --start {params.start} and --end {params.end}",
                          f"the video lasts {job.probe.duration:.1f} s")
    video = video_record(job, info["sha256"])
    plan = {"format": PLAN_FORMAT, "video": video, "params": params.to_dict(), "segments": len(segments),
            "output": {"width": job.size[0], "height": job.size[1]}}
    if options.overwrite and not options.finalize_only:
        clear_shard_dir(layout, slug)
    write_plan(layout, slug, plan, options.overwrite)

    summary = ShardSummary(slug)
    if not options.finalize_only:
        mine = [s for s in segments if s.number % options.num_nodes == options.node_rank]
        todo = [s for s in mine if not _done(layout, slug, s)]
        if len(todo) < len(mine):
            say(f"{slug}: {len(mine) - len(todo)} of {len(mine)} segments already done; resuming")
        _run_segments(layout, job, todo, options, summary)

    records = [read_segment_record(layout, slug, s.number) for s in segments]
    missing = [s.number for s, r in zip(segments, records) if r is None]
    summary.missing_segments = len(missing)
    if missing:
        if options.finalize_only:
            raise WtoursError(f"{slug}: {len(missing)} of {len(segments)} segments are not done yet "
                              f"(first: {shard_name(slug, missing[0])})",
                              "run the remaining nodes (or `wtours shard` without --finalize) first")
        say(f"{slug}: {len(missing)} segments are left to other nodes; the last to finish writes the index")
        return summary
    index = build_index(video, params.to_dict(), records)
    write_index(layout, slug, index)
    summary.index = index
    if not index["complete"]:
        raise IncompleteError(
            f"{slug}: decoding stopped at {index['decoded_until']:.2f} s of {job.probe.duration:.2f} s "
            f"({'; '.join(index['errors'][-2:]) or 'no frames past that point'})",
            f"the video is damaged or truncated; {index['samples']} frames before the damage are sharded and indexed. "
            "Download it again for the rest")
    return summary


def cell_runs(cells: list[int]) -> list[list[int]]:
    """Sorted grid cells -> [[first, last], ...] runs of consecutive cells (inclusive)."""
    runs: list[list[int]] = []
    for cell in cells:
        if runs and cell == runs[-1][1] + 1:
            runs[-1][1] = cell
        else:
            runs.append([cell, cell])
    return runs


def _done(layout: Layout, slug: str, segment: Segment) -> bool:
    record = read_segment_record(layout, slug, segment.number)
    return record is not None and record["complete"]


def _run_segments(layout: Layout, job: ShardJob, todo: list[Segment], options: RunOptions,
                  summary: ShardSummary) -> None:
    from tqdm import tqdm

    total_cells = sum(s.end_cell - s.first_cell for s in todo)
    bar = tqdm(total=total_cells, unit="frame", desc=job.slug, disable=not options.progress or not todo)
    lock = threading.Lock()

    def advance(cells: int) -> None:
        with lock:
            bar.update(cells)

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=options.workers) as pool:
            for record in pool.map(lambda s: shard_segment(layout, job, s, advance), todo):
                summary.segments_done += 1
                summary.dropped += sum(record["dropped"].values())
                summary.source_seconds += (record["segment"]["end_cell"] - record["segment"]["first_cell"]) / job.params.fps
                if record["shard"]:
                    summary.shards += 1
                    summary.samples += record["shard"]["samples"]
                    summary.bytes += record["shard"]["bytes"]
    finally:
        bar.close()
        summary.seconds = time.monotonic() - started


def shard_segment(layout: Layout, job: ShardJob, segment: Segment,
                  advance: Callable[[int], None] = lambda cells: None) -> dict[str, Any]:
    """Decode one segment, drop blank frames, write its shard and its record."""
    params, fps = job.params, job.params.fps
    decoder = SegmentDecoder(job.video_path, job.probe, fps, segment, job.size, job.hwaccel)
    shard_path = layout.shard_dir(job.slug) / shard_name(job.slug, segment.number)
    writer: ShardWriter | None = None
    frames: list[tuple[int, float]] = []  # (frame, t) of written samples
    cells: list[int] = []  # grid cells of written samples
    blank_times: list[float] = []
    dropped = {"blank": 0, "duplicate": 0}
    reported = segment.first_cell
    try:
        for decoded in decoder:
            advance(decoded.cell + 1 - reported)
            reported = decoded.cell + 1
            if is_blank(decoded.rgb, params.blank_threshold):
                dropped["blank"] += 1
                blank_times.append(decoded.t)
                continue
            if frames and decoded.frame <= frames[-1][0]:
                dropped["duplicate"] += 1  # variable frame rate: two grid cells mapped to one frame index
                continue
            if writer is None:
                writer = ShardWriter(shard_path)
            height, width = decoded.rgb.shape[:2]
            meta = {"video": job.slug, "source_id": job.source_id, "frame": decoded.frame, "t": decoded.t,
                    "width": width, "height": height}
            writer.write(sample_key(job.slug, decoded.frame),
                         {"jpg": encode_jpeg(decoded.rgb, params.quality), "json": encode_json(meta)})
            frames.append((decoded.frame, decoded.t))
            cells.append(decoded.cell)
        shard = None
        if writer is not None:
            size, digest = writer.close()
            shard = {"name": shard_path.name, "samples": len(frames), "first_frame": frames[0][0],
                     "last_frame": frames[-1][0], "t_start": frames[0][1], "t_end": frames[-1][1],
                     "cell_runs": cell_runs(cells), "bytes": size, "sha256": digest}
        else:
            shard_path.unlink(missing_ok=True)  # a rerun of a segment that is all blank now
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    advance(segment.end_cell - reported)
    outcome = decoder.outcome
    last = outcome.last_cell
    complete = outcome.stopped_early or segment.expected_last_cell < segment.first_cell or (
        last is not None and last >= segment.expected_last_cell)
    record = {
        "segment": segment.to_dict(),
        "shard": shard,
        "dropped": {k: v for k, v in dropped.items() if v},
        "blank_stretches": merge_stretches(blank_times, gap=1.5 / fps),
        "complete": complete,
        "decoded_until": (last + 1) / fps if last is not None else segment.t_start(fps),
        "errors": [] if complete else outcome.errors()[-5:],
    }
    write_json_atomic(segment_record_path(layout, job.slug, segment.number), record)
    return record
