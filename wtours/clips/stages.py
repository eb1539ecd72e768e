"""Generator stages of the clip pipeline; each takes an iterable and yields, testable on lists.

Records passed between stages: ShardRead (epoch.py: a shard part to read) -> ShardStream (its open
bytes) -> Sample (one frame's files) -> Clip (T frames)."""

from __future__ import annotations

import functools
import itertools
import json
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from webdataset.tariterators import group_by_keys, tar_file_iterator

from wtours.clips.epoch import ClipConfig, ShardRead, cell_step
from wtours.clips.jpeg_check import jpeg_damage
from wtours.clips.spec import ShardRef
from wtours.errors import WtoursError
from wtours.layout import sample_key
from wtours.redact import scrub, shown
from wtours.shard.plan import sample_cell
from wtours.shard.read import open_samples
from wtours.streams import FAILED_SHARDS, ByteStream, ShardMismatchError

log = logging.getLogger(__name__)


@dataclass
class ShardStream:
    """An open shard part: `stream` starts at the tar header of sample `first_sample` (0 when the
    reader could not seek: then the samples before `read.first_sample` are read and skipped)."""

    read: ShardRead
    stream: ByteStream
    first_sample: int = 0


@dataclass(frozen=True)
class Sample:
    """One frame of a shard: its files as stored (either may be missing in a damaged shard)."""

    key: str
    index: int  # position in the shard
    read: ShardRead
    jpg: bytes | None
    json: bytes | None

    @property
    def url(self) -> str:
        return self.read.ref.url


@dataclass(frozen=True)
class Clip:
    """T frames `stride` seconds apart from one shard; `key` is its first frame's sample key."""

    key: str
    url: str
    start_cell: int
    jpgs: list[bytes]
    meta: list[dict[str, Any]]


@dataclass
class Problems:
    """What the pipeline skipped: counted, warned about once per shard, never silently."""

    bad_shards: dict[str, str] = field(default_factory=dict)  # url -> error
    bad_samples: int = 0  # a file missing, its json not a record, its JPEG damaged (`jpeg_check`)
    bad_clips: int = 0  # clips with a frame that does not decode
    warned: set[tuple[str, str]] = field(default_factory=set)  # (what, shard): one warning each

    def clip_failed(self, key: str, url: str, error: BaseException) -> None:
        self.bad_clips += 1
        self._warn_once("clips with a frame that does not decode", url, key, scrub(str(error).splitlines()[0], url))

    def sample_failed(self, key: str, url: str, why: str) -> None:
        self.bad_samples += 1
        self._warn_once("damaged samples", url, key, why)

    def _warn_once(self, what: str, url: str, key: str, detail: str) -> None:
        if (what, shown(url)) not in self.warned:  # a SPEC's credentials stay out of logs (wtours.redact)
            self.warned.add((what, shown(url)))
            log.warning("skipping %s of %s (first: %s, %s)", what, shown(url), key, detail)

    def shard_failed(self, url: str, error: BaseException) -> bool:
        raw, url = url, shown(url)  # a SPEC's credentials stay out of the logs and log.jsonl
        if url not in self.bad_shards:
            self.bad_shards[url] = scrub(f"{type(error).__name__}: {error}", raw)
            detail = scrub(str(error.args[0] if error.args else error), raw)
            log.warning("skipping unreadable shard %s (%s)", url, detail)
        return True  # keep going with the next shard

    def counts(self) -> dict:
        """As plain data, which crosses processes: {"bad_shards": {url: error}, "bad_samples": n, "bad_clips": n}."""
        return {"bad_shards": dict(self.bad_shards), "bad_samples": self.bad_samples, "bad_clips": self.bad_clips}

    @staticmethod
    def since(before: dict, now: dict) -> dict:
        """The new bad shards and the counts added between two `counts()`: what a worker sends with a batch."""
        return {"bad_shards": {u: e for u, e in now["bad_shards"].items() if u not in before["bad_shards"]},
                "bad_samples": now["bad_samples"] - before["bad_samples"],
                "bad_clips": now["bad_clips"] - before["bad_clips"]}

    def add(self, counts: dict | None) -> None:
        """Add another process's `counts()`, or a delta of them (a batch's `problems`); a shard keeps its
        first error."""
        if counts:
            for url, error in counts["bad_shards"].items():
                self.bad_shards.setdefault(url, error)
                if error.startswith(ShardMismatchError.__name__):  # a worker's: this process's next workers skip it
                    FAILED_SHARDS.setdefault(url, error)
            self.bad_samples += counts["bad_samples"]
            self.bad_clips += counts["bad_clips"]


def open_part(read: ShardRead) -> ShardStream:
    """Open a shard part with the one reader of shard bytes (shard.read.open_samples: a seek, a Range request, or
    the bytes before it read and dropped; from another machine, every sample checked against its index)."""
    stream, first = open_samples(read.ref.url, read.ref.entry, read.first_sample, read.stop_sample)
    return ShardStream(read, stream, first)


def open_shards(reads: Iterable[ShardRead | ShardRef], problems: Problems) -> Iterator[ShardStream]:
    """ShardRead (or a whole ShardRef) -> ShardStream; an unopenable shard is skipped and counted.

    Each stream is closed when the next is requested (or when the pipeline stops): the samples stage
    reads a stream to its end, or as far as it needs, before asking for the next."""
    for read in reads:
        if isinstance(read, ShardRef):
            read = ShardRead.whole(read, ())
        try:
            stream = open_part(read)
        except (OSError, WtoursError) as e:
            problems.shard_failed(read.ref.url, e)
            continue
        try:
            yield stream
        finally:
            stream.stream.close()


def tar_samples(sources: Iterable[ShardStream], problems: Problems) -> Iterator[Sample]:
    """Open streams -> the samples of each part (webdataset's tar reader and key grouping).

    Samples before the part's first sample (a stream that could not seek) are skipped, and reading
    stops after its last one. A tar error ends that shard's samples and is charged to it."""
    for source in sources:
        handler = functools.partial(problems.shard_failed, source.read.ref.url)
        index, stop = source.first_sample, source.read.stop_sample
        for item in group_by_keys(_tar_files(source, handler), handler=handler):
            if stop is not None and index >= stop:
                break
            if index >= source.read.first_sample:
                yield Sample(item["__key__"], index, source.read, item.get("jpg"), item.get("json"))
            index += 1


def _tar_files(source: ShardStream, handler: Callable[[BaseException], bool]) -> Iterator[dict[str, Any]]:
    # a tar or stream failure ends this shard's files here, so the key grouping still yields the
    # sample it holds (what arrived before the failure is used)
    try:
        for item in tar_file_iterator(source.stream, handler=handler):
            yield {**item, "__url__": source.read.ref.url}
    except Exception as error:  # noqa: BLE001 (any tar or stream failure: count the shard, go on)
        handler(error)


def samples_to_clips(samples: Iterable[Sample], config: ClipConfig, problems: Problems) -> Iterator[Clip]:
    """Time-ordered samples of a shard part -> clips of T frames `step` cells apart, inside one run.

    A sliding window over the part holds the last `span + 1` cells; a clip is emitted at its last
    frame when its start is among the part's starts and every cell of its span is present."""
    window: deque[tuple[int, dict[str, Any], bytes]] = deque()
    read = None
    for sample in samples:
        if sample.read is not read:  # a new part (the same shard may come twice: padding)
            read, window = sample.read, deque()
            ref = read.ref
            step = cell_step(config.stride, ref.fps)
            span = (config.frames - 1) * step
        if sample.jpg is None or sample.json is None:
            problems.sample_failed(sample.key, ref.url, "a file of the sample is missing")
            continue
        if why := jpeg_damage(sample.jpg):  # before any decoder: every decoder path counts the same frames
            problems.sample_failed(sample.key, ref.url, why)
            continue
        try:
            meta = json.loads(sample.json)
            cell = sample_cell(meta["t"], ref.fps, ref.t_decimals)
        except (ValueError, KeyError, TypeError):
            problems.sample_failed(sample.key, ref.url, "its json is not a sample record")
            continue
        if window and cell != window[-1][0] + 1:
            window.clear()  # a gap (dropped stretch or bad sample): no clip spans it
        window.append((cell, meta, sample.jpg))
        if len(window) > span + 1:
            window.popleft()
        start = cell - span
        if len(window) == span + 1 and start in read.starts:
            frames = [window[j * step] for j in range(config.frames)]
            yield Clip(sample_key(ref.slug, frames[0][1]["frame"]), ref.url, start, [f[2] for f in frames],
                       [f[1] for f in frames])


def shard_clips(reads: Iterable[ShardRead | ShardRef], config: ClipConfig, problems: Problems) -> Iterator[Clip]:
    """The clips of shard parts, through every stage: open -> tar samples -> clips."""
    return samples_to_clips(tar_samples(open_shards(reads, problems), problems), config, problems)


def shuffle(items: Iterable[Any], buffer_size: int, rng: random.Random) -> Iterator[Any]:
    """Reservoir-style shuffle buffer: yields every item exactly once."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        i = rng.randrange(len(buffer))
        buffer[i], item = item, buffer[i]
        yield item
    rng.shuffle(buffer)
    yield from buffer


def take_quota(make_pass: Callable[[], Iterable[Any]], quota: int) -> Iterator[Any]:
    """Exactly `quota` items: a pass, then further passes (repeats) until the quota is met."""
    if quota <= 0:  # a worker the plan gives no batch (fewer batches per rank than workers)
        return
    produced = 0
    while True:
        before = produced
        for item in make_pass():
            yield item
            produced += 1
            if produced == quota:
                return
        if produced == before:
            raise WtoursError("every shard of this worker failed to give a clip",
                              "see the warnings above: the shards may be unreadable or truncated")


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch
