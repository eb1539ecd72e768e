"""Deterministic WebDataset tar writing: typed samples in, fixed member metadata, written atomically."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import tarfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
from PIL import Image

from wtours.layout import replace_atomically


@dataclass(frozen=True)
class SampleMeta:
    """A sample's `<key>.json` (docs/data-format.md). Every field has one JSON type in every set, so that tools
    that infer a schema from the first shard they read (Hugging Face `datasets`) can mix sets: `source_id` is ""
    for a video from outside the corpus, never null (null in sets before index version 4; `from_json`)."""

    video: str
    source_id: str  # the corpus video's YouTube id; "" for a video from anywhere else
    frame: int  # index of the frame in the source video
    t: float  # seconds from the first timestamp, unrounded (see `shard.plan.frame_time`)
    width: int
    height: int


    @classmethod
    def from_json(cls, data: bytes) -> SampleMeta:
        """A stored `<key>.json`, of any version: a null `source_id` (index versions 1 to 3) reads as ""."""
        fields = json.loads(data)
        return cls(**{**fields, "source_id": fields.get("source_id") or ""})


@dataclass(frozen=True)
class ShardSample:
    """Stage record handed to the writer: one frame, encoded."""

    key: str
    jpg: bytes
    meta: SampleMeta


@dataclass(frozen=True)
class WrittenShard:
    bytes: int
    sha256: str
    offsets: tuple[int, ...]  # byte offset of each sample's first tar header, in sample order
    sample_sha256: tuple[str, ...]  # of each sample's bytes: from its offset to the next (the last: to the end)


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)  # libjpeg-turbo: deterministic
    return buffer.getvalue()


def encode_json(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8")


class _HashingFile:
    """A write-only file wrapper that hashes and counts what passes through, and hashes each sample's bytes
    apart: from its `start_sample()` to the next (the last one to the end of the file)."""

    def __init__(self, raw):
        self.raw, self.digest, self.size = raw, hashlib.sha256(), 0
        self.samples: list[Any] = []

    def start_sample(self) -> None:
        self.samples.append(hashlib.sha256())

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        if self.samples:
            self.samples[-1].update(data)
        self.size += len(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.size


def write_shard(path: Path, samples: Iterable[ShardSample]) -> WrittenShard | None:
    """Consume the samples into the shard at `path`, atomically; None (and no file) when there are none.
    Members are `<key>.jpg` then `<key>.json` per sample, with mtime 0, uid/gid 0, mode 0644 and no
    user names, so the same samples always give the same bytes."""
    stream = iter(samples)
    first = next(stream, None)
    if first is None:
        path.unlink(missing_ok=True)  # a rerun of a segment that is all blank now
        return None
    return replace_atomically(path, lambda tmp: _write_tar(tmp, itertools.chain([first], stream)))


def _write_tar(path: Path, samples: Iterable[ShardSample]) -> WrittenShard:
    offsets: list[int] = []
    with open(path, "wb") as raw:
        counted = _HashingFile(raw)
        with tarfile.open(fileobj=cast(IO[bytes], counted), mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for sample in samples:
                offsets.append(tar.offset)  # where this sample's first header goes
                counted.start_sample()
                _add(tar, f"{sample.key}.jpg", sample.jpg)
                _add(tar, f"{sample.key}.json", encode_json(asdict(sample.meta)))
    return WrittenShard(counted.size, counted.digest.hexdigest(), tuple(offsets),
                        tuple(d.hexdigest() for d in counted.samples))


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))
