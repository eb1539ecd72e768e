"""Frame sources as generator stages: shard samples or a video decoded on the sampling grid, in time order."""

from __future__ import annotations

import io
import logging
import math
import queue
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from wtours.errors import UsageError, WtoursError
from wtours.layout import Layout
from wtours.media import ProbeResult
from wtours.privacy.params import FaceBox
from wtours.shard.decode import SegmentDecoder
from wtours.shard.index import ShardEntry, ShardIndex, load_index
from wtours.shard.params import DEFAULT_SHORT_SIDE, ShardParams
from wtours.shard.plan import EPS, output_size, plan_segments, sample_cell
from wtours.shard.read import iter_shard, open_samples
from wtours.shard.verify import quick_problem
from wtours.shard.writer import ShardSample
from wtours.stats.params import DEFAULT_VIDEO_EVERY

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    t: float  # seconds from the video's first timestamp
    frame: int  # index of the frame in the source video
    rgb: np.ndarray  # (H, W, 3) uint8
    faces: int | None = None  # faces hidden in the stored frame (a set made with --blur-faces); None: not counted
    face_boxes: tuple[FaceBox, ...] | None = None  # where they were (the index's `face_boxes`); None: not recorded


@dataclass
class SourceInfo:
    """What a source says about itself; `complete` turns false when decoding stopped early."""

    kind: str  # "shards" or "video"
    every: float  # seconds between analysed frames
    fps: float  # the analysis grid in cells per second: the shards' own rate exactly, never 1 / every
    expected: int  # grid cells in the whole video (the progress bar's total)
    frame_size: tuple[int, int]  # (width, height) of the frames handed on
    video: dict[str, Any]  # the source video: duration (s), fps, width, height, sha256
    complete: bool = True
    notes: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # shards not read: {"name", "reason"}
    on_skip: Callable[[list[dict[str, str]]], None] | None = None  # records `skipped` as soon as it grows

    def skip(self, name: str, reason: str, remote: bool = False) -> None:
        """A missing, truncated or damaged shard: counted and named, its frames left out (as `train` does)."""
        log.warning("skipping shard %s: %s", name, reason)
        self.skipped.append({"name": name, "reason": reason})
        self.complete = False
        remedy = ("ask the set's publisher to push it again (or `wtours pull` the set and `wtours verify --repair` "
                  "it)" if remote else "repair it with `wtours verify --repair`")
        self.notes.append(f"shard {name} skipped ({reason}); its frames are left out: {remedy}, then rerun "
                          "with --overwrite")
        if self.on_skip is not None:
            self.on_skip(self.skipped)


def on_grid(items: Iterable[T], fps: float, after: float | None = None,
            time_of: Callable[[T], float] = lambda item: item.t,  # type: ignore[attr-defined]  # items with .t
            t_decimals: int | None = None) -> Iterator[T]:
    """Keep the first item in each grid cell of `fps` cells per second (the shards' sampling rule), past
    `after`; cells come from `sample_cell`, the one rule the shard writer and the clip loader share."""
    last = sample_cell(after, fps, t_decimals) if after is not None else -1
    for item in items:
        cell = sample_cell(time_of(item), fps, t_decimals)
        if cell > last:
            last = cell
            yield item


def prefetch(items: Iterable[T], depth: int = 16) -> Iterator[T]:
    """Run the upstream stages in a thread (JPEG and ffmpeg reads release the GIL) while we measure."""
    box: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def fill() -> None:
        try:
            for item in items:
                if stop.is_set():
                    break
                box.put(item)
        except BaseException as error:  # handed to the consumer, which re-raises it
            box.put(error)
        finally:
            getattr(items, "close", lambda: None)()  # e.g. ends an ffmpeg process when the consumer stopped early
            box.put(done)

    worker = threading.Thread(target=fill, daemon=True)
    worker.start()
    try:
        while (item := box.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a put so the thread sees `stop`
            try:
                box.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)


class ShardSource:
    """The frames of a sharded video (default and fastest: already sampled and scaled)."""

    def __init__(self, layout: Layout, slug: str, every: float | None,
                 remote: tuple[str, ShardIndex] | None = None):
        """Local shards under the root, or `remote` = (folder URL, index) from `spec.resolve_sets` (hf://, http)."""
        if remote is None and not layout.index_path(slug).is_file():
            raise WtoursError(f"{slug} is not sharded yet (no {layout.index_path(slug)})",
                              f"run `wtours shard --city {slug}` first, or analyse the video directly with "
                              f"`wtours stats --city {slug} --from video`")
        self.folder: str | None = remote[0] if remote is not None else None
        self.index: ShardIndex = remote[1] if remote is not None else load_index(layout, slug)
        self.faces: dict[str, int] = {}  # by sample key, of the shards read so far: the index's per-sample counts
        self.face_boxes: dict[str, tuple[FaceBox, ...]] = {}  # likewise, the index's per-sample boxes
        self.layout, self.slug = layout, slug
        shard_every = 1 / self.index.fps
        if every is not None and every < shard_every - EPS:
            raise UsageError(f"--every {every:g} s is finer than the shards, sampled every {shard_every:g} s",
                              f"use --every {shard_every:g} or more, or --from video to decode the video itself")
        # At the shards' own rate every sample is its own cell: they are all read, none re-selected.
        self.own_rate = every is None or abs(every - shard_every) < EPS
        every = shard_every if self.own_rate or every is None else every
        video, params = self.index.video, self.index.params
        end = min(video.duration, params.end) if params.end else video.duration
        size = output_size(video.width, video.height, params.short_side)
        described = {k: getattr(video, k) for k in ("duration", "fps", "width", "height", "sha256")}
        expected = self.index.samples if self.own_rate else _cells(params.start, end, every)
        fps = self.index.fps if self.own_rate else 1 / every
        self.info = SourceInfo("shards", every, fps, expected, size, described)
        if not self.index.complete:
            self.info.complete = False
            self.info.notes.append(f"the shards stop at {self.index.decoded_until:.2f} s (damaged video)")

    def samples(self, after: float | None) -> Iterator[ShardSample]:
        """The samples of every readable shard; a missing, truncated or damaged one is skipped and counted."""
        for entry in self.index.shards:
            if after is not None and entry.t_end <= after:
                continue  # whole shard done in an earlier run: not even read
            try:
                if self.folder is None:
                    path = self.layout.shard_file(self.slug, entry.name)
                    problem = quick_problem(path, entry)  # size and sha256 against the index: damage is caught
                    if problem:
                        self.info.skip(entry.name, problem)
                        continue
                    yield from self._counted(iter_shard(path), entry)
                else:
                    yield from self._counted(self._streamed(entry), entry)
            except (tarfile.TarError, EOFError, zlib.error, UnicodeDecodeError, ValueError, TypeError) as e:
                self.info.skip(entry.name, f"unreadable ({e})", remote=self.folder is not None)
            except WtoursError as e:  # a remote shard that cannot be fetched
                self.info.skip(entry.name, e.message, remote=True)
            except OSError as e:  # a remote shard that is not the one its index describes, or a broken stream
                self.info.skip(entry.name, str(e), remote=True)

    def _counted(self, samples: Iterator[ShardSample], entry: ShardEntry) -> Iterator[ShardSample]:
        """The shard's samples, each one's hidden faces (the index's `faces` and `face_boxes`, in sample order)
        noted."""
        for i, sample in enumerate(samples):
            if entry.faces is not None and i < len(entry.faces):
                self.faces[sample.key] = entry.faces[i]
            if entry.face_boxes is not None and i < len(entry.face_boxes):
                self.face_boxes[sample.key] = entry.face_boxes[i]
            yield sample

    def _streamed(self, entry: ShardEntry) -> Iterator[ShardSample]:
        """A shard from `remote`, never stored, read as the loader reads it (`open_samples`: from another machine,
        each sample checked against the index before it counts)."""
        stream, _ = open_samples(f"{self.folder}/{entry.name}", entry)
        try:
            yield from iter_shard(stream)  # type: ignore[arg-type]  # a ByteStream is all tarfile reads
        finally:
            stream.close()

    def frames(self, after: float | None = None) -> Iterator[Frame]:
        from PIL import Image

        samples = self.samples(after)
        chosen: Iterator[ShardSample]
        if self.own_rate:
            chosen = (s for s in samples if after is None or s.meta.t > after)
        else:
            t_decimals = 6 if self.index.version == 1 else None  # version 1 rounded `t` (see `sample_cell`)
            chosen = on_grid(samples, self.info.fps, after, time_of=lambda s: s.meta.t, t_decimals=t_decimals)
        for s in chosen:  # grid selection reads only the json; JPEGs are decoded for the samples kept
            with Image.open(io.BytesIO(s.jpg)) as image:
                yield Frame(s.meta.t, s.meta.frame, np.asarray(image.convert("RGB")), self.faces.get(s.key),
                            self.face_boxes.get(s.key))


class VideoSource:
    """The registered video decoded with ffmpeg on a grid of one frame per `every` seconds."""

    def __init__(self, path: Path, probe: ProbeResult, sha256: str, every: float | None):
        self.path, self.probe = path, probe
        every = every if every is not None else DEFAULT_VIDEO_EVERY
        # Same scale as the default shards, so the two sources give the same numbers.
        size = output_size(probe.width, probe.height, DEFAULT_SHORT_SIDE)
        described = {k: getattr(probe, k) for k in ("duration", "fps", "width", "height")} | {"sha256": sha256}
        self.info = SourceInfo("video", every, 1 / every, _cells(0.0, probe.duration, every), size, described)

    def frames(self, after: float | None = None) -> Iterator[Frame]:
        fps = self.info.fps
        start = (sample_cell(after, fps) + 1) / fps if after is not None else 0.0
        if start >= self.probe.duration:
            return
        whole = ShardParams(fps=fps, samples_per_shard=2**62, start=start)  # one segment: the rest of the video
        for segment in plan_segments(self.probe, whole):
            decoder = SegmentDecoder(self.path, self.probe, fps, segment, self.info.frame_size)
            for decoded in decoder:
                yield Frame(decoded.t, decoded.frame, decoded.rgb)
            killed = decoder.outcome.killed_by()
            if killed is not None:  # not the video's fault: never recorded as a damaged video
                raise WtoursError(f"ffmpeg was killed by signal {killed} while decoding {self.path.name}",
                                  "rerun the same command: it continues after the last saved part")
            last = decoder.outcome.last_cell
            if not decoder.outcome.stopped_early and (last is None or last < segment.expected_last_cell):
                self.info.complete = False
                until = (last + 1) / fps if last is not None else start
                errors = "; ".join(decoder.outcome.errors()[-2:]) or "no frames past that point"
                self.info.notes.append(f"decoding stopped at {until:.2f} s of {self.probe.duration:.2f} s ({errors})")


def _cells(start: float, end: float, every: float) -> int:
    return max(0, math.ceil(end / every - EPS) - math.ceil(start / every - EPS))

