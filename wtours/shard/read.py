"""Reading our shards back in time order: the one place that knows a sample's member names."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from wtours.shard.writer import SampleMeta, ShardSample


def iter_shard(source: Path | IO[bytes]) -> Iterator[ShardSample]:
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
                yield ShardSample(key, fields["jpg"], SampleMeta(**json.loads(fields["json"])))

