"""Generator stages of the clip pipeline; each takes an iterable and yields, testable on lists."""

from __future__ import annotations

import json
import logging
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from webdataset.tariterators import group_by_keys, tar_file_expander

from wtours.clips.epoch import ClipConfig, cell_step
from wtours.clips.spec import ShardRef, open_url
from wtours.errors import WtoursError
from wtours.shard.plan import cell_of

log = logging.getLogger(__name__)


@dataclass
class Problems:
    """What the pipeline skipped: counted, warned about once per shard, never silently."""

    bad_shards: dict[str, str] = field(default_factory=dict)  # url -> error
    bad_samples: int = 0
    bad_clips: int = 0  # clips with a frame that does not decode
    shards_with_bad_frames: set[str] = field(default_factory=set)

    def clip_failed(self, key: str, url: str, error: BaseException) -> None:
        self.bad_clips += 1
        if url not in self.shards_with_bad_frames:
            self.shards_with_bad_frames.add(url)
            log.warning("skipping clips of %s with a frame that does not decode (first: %s, %s)", url, key,
                        str(error).splitlines()[0])

    def shard_failed(self, url: str, error: BaseException) -> bool:
        if url not in self.bad_shards:
            self.bad_shards[url] = f"{type(error).__name__}: {error}"
            log.warning("skipping unreadable shard %s (%s)", url, error.args[0] if error.args else error)
        return True  # keep going with the next shard


def open_shards(refs: Iterable[ShardRef], problems: Problems) -> Iterator[dict[str, Any]]:
    """ShardRef -> {"url", "stream"}; an unopenable shard is skipped and counted.

    The tar expander reads a stream to its end before asking for the next, so each stream is closed
    when the next is requested (or when the pipeline stops)."""
    stream = None
    try:
        for ref in refs:
            try:
                stream = open_url(ref.url)
            except (OSError, WtoursError) as e:
                problems.shard_failed(ref.url, e)
                continue
            yield {"url": ref.url, "stream": stream}
            stream.close()
            stream = None
    finally:
        if stream is not None:
            stream.close()


def tar_samples(sources: Iterable[dict[str, Any]], problems: Problems) -> Iterator[dict[str, Any]]:
    """Open streams -> samples {"__key__", "__url__", "jpg", "json"} (webdataset's tar expander).

    Errors are charged to the shard being read, which the expander requests one at a time."""
    current = {"url": "<no shard>"}

    def track(items: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in items:
            current["url"] = item["url"]
            yield item

    def handler(error: BaseException) -> bool:
        return problems.shard_failed(current["url"], error)

    files = tar_file_expander(track(sources), handler=handler)
    yield from group_by_keys(files, handler=handler)


def samples_to_clips(samples: Iterable[dict[str, Any]], refs: dict[str, ShardRef], starts: dict[str, set[int]],
                     config: ClipConfig, problems: Problems) -> Iterator[dict[str, Any]]:
    """Time-ordered samples of a shard -> clips of T frames `step` cells apart, inside one run of cells.

    A sliding window over the shard holds the last `span + 1` cells; a clip is emitted at its last
    frame when its start is among this epoch's starts and every cell of its span is present."""
    window: deque[tuple[int, dict[str, Any]]] = deque()
    url = None
    for sample in samples:
        if sample["__url__"] != url:
            url, window = sample["__url__"], deque()
            ref = refs[url]
            step = cell_step(config.stride, ref.fps)
            span = (config.frames - 1) * step
            wanted = starts[url]
        if "jpg" not in sample or "json" not in sample:
            problems.bad_samples += 1
            continue
        try:
            meta = json.loads(sample["json"])
            cell = cell_of(meta["t"], ref.fps)
        except (ValueError, KeyError, TypeError):
            problems.bad_samples += 1
            continue
        if window and cell != window[-1][0] + 1:
            window.clear()  # a gap (dropped stretch or bad sample): no clip spans it
        window.append((cell, {"jpg": sample["jpg"], "meta": meta}))
        if len(window) > span + 1:
            window.popleft()
        start = cell - span
        if len(window) == span + 1 and start in wanted:
            frames = [window[j * step][1] for j in range(config.frames)]
            yield {"__key__": f"{ref.slug}-{frames[0]['meta']['frame']:08d}", "url": url, "start_cell": start,
                   "jpgs": [f["jpg"] for f in frames], "meta": [f["meta"] for f in frames]}


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


def take_quota(make_pass: Callable[[int], Iterable[Any]], quota: int) -> Iterator[Any]:
    """Exactly `quota` items: pass 0, then further passes (repeats) until the quota is met."""
    produced = 0
    for pass_number in range(1_000_000):
        before = produced
        for item in make_pass(pass_number):
            yield item
            produced += 1
            if produced == quota:
                return
        if produced == before:
            raise WtoursError("every shard of this worker failed to give a clip",
                              "see the warnings above: the shards may be unreadable or truncated")


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
