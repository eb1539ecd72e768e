"""Reading our shards back in time order: the one place that knows a sample's member names."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from wtours.layout import Layout
from wtours.shard.index import load_index
from wtours.shard.writer import SampleMeta, ShardSample

StoredSample = ShardSample  # a sample read back is what the writer was given


def iter_shard(source: Path | IO[bytes]) -> Iterator[StoredSample]:
    """Samples of one shard (a local path or an open stream), in stored (time) order."""
    opened = tarfile.open(source, "r|") if isinstance(source, (str, Path)) else tarfile.open(fileobj=source, mode="r|")
    with opened as tar:
        pending: dict[str, dict[str, bytes]] = {}
        for member in tar:
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is None:  # a link, folder or device member carries no sample
                continue
            key, _, extension = member.name.partition(".")
            fields = pending.setdefault(key, {})
            fields[extension] = handle.read()
            if "jpg" in fields and "json" in fields:
                del pending[key]
                yield StoredSample(key, fields["jpg"], SampleMeta(**json.loads(fields["json"])))


def iter_video_samples(layout: Layout, slug: str) -> Iterator[StoredSample]:
    """Every sample of a sharded video, in time order (shard by shard)."""
    for entry in load_index(layout, slug).shards:
        yield from iter_shard(layout.shard_file(slug, entry.name))
