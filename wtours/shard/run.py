"""`wtours shard`: a registered video -> time-contiguous WebDataset shards plus index.json."""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from wtours import media, stop
from wtours.errors import IncompleteError, UsageError, WtoursError
from wtours.layout import Layout, remove_stale_temporaries, sample_key, shard_name, write_json_atomic
from wtours.locks import RANKS, folder_lock
from wtours.privacy.blur import FaceBlur
from wtours.privacy.params import FaceBox
from wtours.shard.blank import is_blank
from wtours.shard.card import write_local_card
from wtours.shard.decode import DecodedFrame, SegmentDecoder
from wtours.shard.index import (
    INDEX_VERSION,
    IndexVideo,
    SegmentRecord,
    ShardEntry,
    ShardIndex,
    build_index,
    clear_shard_dir,
    read_segment_record,
    write_plan,
)
from wtours.shard.params import RunOptions, ShardParams
from wtours.shard.plan import Segment, merge_runs, output_size, plan_segments
from wtours.shard.writer import SampleMeta, ShardSample, WrittenShard, encode_jpeg, write_shard
from wtours.video import registered_video


@dataclass(frozen=True)
class ShardJob:
    """What every segment of one video needs to know."""

    slug: str
    video_path: Path
    probe: media.ProbeResult
    video: IndexVideo  # the source video as the index records it (from info.json)
    params: ShardParams
    size: tuple[int, int]  # output (width, height)
    hwaccel: str
    blur: FaceBlur | None = None  # --blur-faces: the detector, loaded once per run


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
    index: ShardIndex | None = None
    missing_segments: int = 0  # segments other nodes still have to do

    def line(self, source_fps: float) -> str:
        """What this run did; where it decoded nothing (a rerun of a finished set, --finalize), what the set holds."""
        if self.index is not None and not self.segments_done:
            return f"{self.slug}: complete, nothing left to decode: {self.set_figures()}"
        rate = self.samples / self.seconds if self.seconds else 0.0
        decoded = self.source_seconds * source_fps / self.seconds if self.seconds else 0.0
        whole = f"; the set: {self.set_figures()}" if self.index is not None and self.index.samples != self.samples \
            else ""
        return (f"{self.slug}: {self.samples} frames in {self.shards} shards, {self.bytes / 1e6:.1f} MB, "
                f"{rate:.1f} frames/s written ({decoded:.0f} source frames/s decoded), {self.dropped} dropped, "
                f"{self.seconds:.1f} s{whole}")

    def set_figures(self) -> str:
        index = self.index
        assert index is not None
        return (f"{index.samples} frames in {len(index.shards)} shards, "
                f"{sum(s.bytes for s in index.shards) / 1e6:.1f} MB, {index.dropped.get('blank', 0)} blank dropped")


def prepare_job(layout: Layout, slug: str, params: ShardParams, hwaccel: str) -> ShardJob:
    info, path = registered_video(layout, slug)
    p = info.probe
    video = IndexVideo(slug, info.source_id, info.sha256, p.duration, p.fps, p.width, p.height, p.frames)
    blur = FaceBlur.from_params(params.blur) if params.blur_faces else None  # a missing extra fails here, early
    if hwaccel == "auto":
        hwaccel = "cuda" if media.cuda_decoding_available() else "none"
    elif hwaccel == "cuda" and not media.cuda_decoding_available():
        raise UsageError("--hwaccel cuda: this ffmpeg or machine has no CUDA decoding",
                          "use --hwaccel none (or auto), or an ffmpeg built with NVDEC on a machine with an NVIDIA GPU")
    return ShardJob(slug, path, p, video, params, output_size(p.width, p.height, params.short_side), hwaccel, blur)


class DecoderKilledError(WtoursError):
    """ffmpeg was killed from outside (a signal): the video is not known to be damaged, nothing is recorded."""


class SegmentCancelled(Exception):
    """The run was interrupted (Ctrl-C, a stop signal): segments in flight stop without writing anything."""


def shard_video(layout: Layout, slug: str, params: ShardParams, options: RunOptions,
                say: Callable[[str], None] = print) -> ShardSummary:
    """Shard a registered video (a rerun resumes). One run per shard folder: ranks of a multi-node run share
    it by design, each holding it as one of its RANKS (so no single-node run, pull, repair or reader works beside
    them) and locking its own rank (so the same rank cannot run twice); stale temporaries are only removed by
    single-node runs."""
    job = prepare_job(layout, slug, params, options.hwaccel)  # before the lock: nothing created for a typo
    what, rank, shared = f"shard folder of {slug}", options.node_rank, options.num_nodes > 1
    with folder_lock(layout.shard_dir(slug), what, RANKS if shared else None), \
            (folder_lock(layout.node_lock_dir(slug, rank), f"{what} (node rank {rank})") if shared else nullcontext()):
        if not shared:
            folders = (layout.shard_dir(slug), layout.segments_dir(slug))
            stale = [p for folder in folders for p in remove_stale_temporaries(folder)]
            if stale:
                say(f"{slug}: removed {len(stale)} temporary file(s) left by an interrupted run")
        return _shard_locked(layout, slug, params, options, job, say)


def _shard_locked(layout: Layout, slug: str, params: ShardParams, options: RunOptions, job: ShardJob,
                  say: Callable[[str], None]) -> ShardSummary:
    segments = plan_segments(job.probe, params)
    if not segments:
        raise WtoursError(f"{slug}: nothing to shard between --start {params.start} and --end {params.end}",
                          f"the video lasts {job.probe.duration:.1f} s")
    if options.overwrite and not options.finalize_only:
        clear_shard_dir(layout, slug)
    write_plan(layout, job.video, params, len(segments), job.size, options.overwrite)

    summary = ShardSummary(slug)
    if not options.finalize_only:
        mine = [s for s in segments if s.number % options.num_nodes == options.node_rank]
        done = [read_segment_record(layout, slug, s.number, job.video.source_id) for s in mine]
        todo = [s for s, record in zip(mine, done) if record is None or not record.complete]
        if len(todo) < len(mine):
            say(f"{slug}: {len(mine) - len(todo)} of {len(mine)} segments already done; resuming")
        _run_segments(layout, job, todo, options, summary)

    records = [read_segment_record(layout, slug, s.number, job.video.source_id) for s in segments]
    missing = [s.number for s, r in zip(segments, records) if r is None]
    summary.missing_segments = len(missing)
    if missing:
        if options.finalize_only:
            raise WtoursError(f"{slug}: {len(missing)} of {len(segments)} segments are not done yet "
                              f"(first: {shard_name(slug, missing[0])})",
                              "run the remaining nodes (or `wtours shard` without --finalize) first")
        say(f"{slug}: {len(missing)} segments are left to other nodes; the last to finish writes the index")
        return summary
    index = build_index(job.video, params, [r for r in records if r is not None])
    index.write(layout.shard_dir(slug))
    summary.index = index
    if write_local_card(layout) is None:  # a README of the user's own (or a Hub card, which loads too)
        say(f"{layout.shards_card_path()}: not written by `wtours shard`, left as is (`wtours card --local "
            "--overwrite` replaces it with the card `datasets` loads the sets by)")
    if not index.complete:
        raise IncompleteError(
            f"{slug}: decoding stopped at {index.decoded_until:.2f} s of {job.probe.duration:.2f} s "
            f"({'; '.join(index.errors[-2:]) or 'no frames past that point'})",
            f"the video is damaged or truncated; {index.samples} frames before the damage are sharded and indexed. "
            "Download it again for the rest")
    return summary


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
    cancel = threading.Event()
    pool = ThreadPoolExecutor(max_workers=options.workers)
    try:
        for record in pool.map(lambda s: shard_segment(layout, job, s, advance, cancel), todo):
            summary.segments_done += 1
            summary.dropped += sum(record.dropped.values())
            summary.source_seconds += (record.segment.end_cell - record.segment.first_cell) / job.params.fps
            if record.shard:
                summary.shards += 1
                summary.samples += record.shard.samples
                summary.bytes += record.shard.bytes
    except BaseException:
        # Ctrl-C, a full disk, a killed decoder: segments in flight stop at their next frame, writing
        # nothing (their temporaries are removed); finished segments keep their records, so a rerun resumes.
        cancel.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        summary.seconds = time.monotonic() - started


def shard_segment(layout: Layout, job: ShardJob, segment: Segment,
                  advance: Callable[[int], None] = lambda cells: None,
                  cancel: threading.Event | None = None) -> SegmentRecord:
    """Decode one segment, drop blank frames, write its shard and its record. A decoder killed by a signal,
    or a run cancelled meanwhile, raises before the shard is renamed into place: nothing is written for the
    segment (not even a "damaged" record), and a rerun redoes it."""
    fps = job.params.fps
    decoder = SegmentDecoder(job.video_path, job.probe, fps, segment, job.size, job.hwaccel)
    tally = SegmentTally(reported=segment.first_cell)
    frames = _checked(decoder, job, segment, cancel or threading.Event())
    written = write_shard(layout.shard_path(job.slug, segment.number), tally.samples(frames, job, advance))
    advance(segment.end_cell - tally.reported)
    outcome = decoder.outcome
    last = outcome.last_cell
    complete = outcome.stopped_early or segment.expected_last_cell < segment.first_cell or (
        last is not None and last >= segment.expected_last_cell)
    record = SegmentRecord(
        segment=segment,
        shard=tally.entry(shard_name(job.slug, segment.number), written) if written else None,
        dropped={k: v for k, v in tally.dropped.items() if v},
        blank_stretches=tuple(merge_runs(((t, t) for t in tally.blank_times), gap=1.5 / fps)),
        complete=complete,
        decoded_until=(last + 1) / fps if last is not None else segment.t_start(fps),
        errors=() if complete else outcome.error_summary(),
        version=INDEX_VERSION,
    )
    write_json_atomic(layout.segment_record_path(job.slug, segment.number), record.to_dict())
    return record


def _checked(decoder: SegmentDecoder, job: ShardJob, segment: Segment,
             cancel: threading.Event) -> Iterator[DecodedFrame]:
    """The decoder's frames; raises at the end (inside the shard write, so nothing is renamed into place)
    when the run was cancelled or ffmpeg was killed from outside rather than ending by itself."""
    yield from itertools.takewhile(lambda frame: not cancel.is_set(), decoder)
    if cancel.is_set():
        raise SegmentCancelled()
    killed = decoder.outcome.killed_by()
    if killed is not None:
        if killed == signal.SIGINT:
            raise KeyboardInterrupt  # a Ctrl-C reached ffmpeg first: this run is being interrupted
        if killed in stop.SIGNALS:
            raise stop.Stopped(killed)  # so did a scheduler's stop signal (SLURM signals every process of a step)
        name = next((s.name for s in signal.Signals if s == killed), f"signal {killed}")
        raise DecoderKilledError(
            f"{job.slug}: ffmpeg was killed by {name} while decoding {shard_name(job.slug, segment.number)} "
            f"({segment.t_start(job.params.fps):.1f}-{segment.t_end(job.params.fps):.1f} s); "
            "this is not a fault of the video, and nothing was recorded for that segment",
            "rerun the same command: it resumes with that segment (if something kills ffmpeg again, "
            "e.g. the out-of-memory killer, lower --workers)", exit_code=1)


@dataclass
class SegmentTally:
    """What one segment's frames came to: the written samples' frames, times, cells and faces, and the drops."""

    reported: int  # the next cell the progress bar has not counted yet
    kept: list[tuple[int, float, int]] = field(default_factory=list)  # (frame, t, cell) per written sample
    face_boxes: list[tuple[FaceBox, ...]] = field(default_factory=list)  # hidden per written sample (--blur-faces)
    blank_times: list[float] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=lambda: {"blank": 0, "duplicate": 0})

    def samples(self, decoded: Iterable[DecodedFrame], job: ShardJob,
                advance: Callable[[int], None]) -> Iterator[ShardSample]:
        """Stage: decoded frames -> the samples to store. Blank and repeated frames are counted, not kept;
        with --blur-faces, faces are hidden (and counted) before the frame is encoded."""
        for frame in decoded:
            advance(frame.cell + 1 - self.reported)
            self.reported = frame.cell + 1
            if is_blank(frame.rgb, job.params.blank_threshold):
                self.dropped["blank"] += 1
                self.blank_times.append(frame.t)
                continue
            if self.kept and frame.frame <= self.kept[-1][0]:
                self.dropped["duplicate"] += 1  # variable frame rate: two grid cells mapped to one frame index
                continue
            self.kept.append((frame.frame, frame.t, frame.cell))
            rgb = frame.rgb
            if job.blur is not None:
                rgb, found = job.blur.apply(rgb)
                self.face_boxes.append(found)
            height, width = rgb.shape[:2]
            meta = SampleMeta(job.slug, job.video.source_id or "", frame.frame, frame.t, width, height)
            yield ShardSample(sample_key(job.slug, frame.frame), encode_jpeg(rgb, job.params.quality), meta)

    def entry(self, name: str, written: WrittenShard) -> ShardEntry:
        """The written shard's index entry; `faces` and `face_boxes` only with --blur-faces (one per sample then)."""
        frames, times, cells = zip(*self.kept)
        return ShardEntry(name, len(frames), frames[0], frames[-1], times[0], times[-1], cell_runs(cells),
                          written.bytes, written.sha256, written.offsets, written.sample_sha256,
                          tuple(map(len, self.face_boxes)) or None, tuple(self.face_boxes) or None)


def cell_runs(cells: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """Sorted grid cells -> ((first, last), ...) runs of consecutive cells (inclusive)."""
    return tuple(merge_runs(((cell, cell) for cell in cells), gap=1))
