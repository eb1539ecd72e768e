"""Reading our shards back in time order: the one place that knows a sample's member names, and the one reader
of shard bytes (`open_samples`: whole shards and parts, checked against the index when they come from elsewhere)."""

from __future__ import annotations

import logging
import posixpath
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from wtours import streams
from wtours.redact import shown
from wtours.shard.index import RESHARD_HINT, ShardEntry
from wtours.shard.writer import SampleMeta, ShardSample
from wtours.streams import FAILED_SHARDS, ByteStream, ShardMismatchError, VerifiedPart, open_at, open_url, url_scheme

TAR_END = bytes(1024)  # two zero blocks: the end-of-archive marker a cut-out member range lacks
log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # sets whose unverifiable parts this process has warned about


def open_samples(url: str, entry: ShardEntry, first: int = 0, stop: int | None = None) -> tuple[ByteStream, int]:
    """The one reader of shard bytes (the clip loader, `viz`, `stats`): samples [first, stop) (None: to the end)
    of the shard at `url` as a tar stream, and the sample it starts at (0 without offsets: the caller skips to
    `first`). From another machine (not a path or file://) each sample is read whole and checked against its
    sha256 in the index (version 3) before it is served; with an older index a whole shard is checked against
    its sha256, and a part cannot be (warned once per set). A shard that failed a check in this process is
    never read again."""
    if (why := FAILED_SHARDS.get(shown(url))) is not None:
        raise ShardMismatchError(f"{shown(url)}: not read again, it failed a check earlier ({why})")
    stop = entry.samples if stop is None else stop
    whole, remote = first == 0 and stop == entry.samples, url_scheme(url) not in (None, "file")
    digests = entry.sample_sha256 if remote else None
    if not whole:
        warn_unverified(url, entry)
    if entry.offsets is None or (whole and digests is None):
        return (streams.verified_whole(url, open_url(url), entry.bytes, entry.sha256) if whole else open_url(url)), 0
    bounds = (*entry.offsets, entry.bytes)
    raw = open_url(url) if whole else open_at(url, bounds[first], bounds[stop])
    if digests is None and stop == entry.samples:
        return raw, first  # to the end: the shard's own end marker ends the tar
    spans = [(bounds[i + 1] - bounds[i], digests[i] if digests else None) for i in range(first, stop)]
    return VerifiedPart(raw, url, spans, first, b"" if stop == entry.samples else TAR_END), first


def warn_unverified(url: str, entry: ShardEntry) -> None:
    """Warn, once per set and process, when parts of this shard from another machine cannot be checked (an index
    before version 3). The clip loader calls it before its workers start, so they do not warn again."""
    folder = posixpath.dirname(shown(url))
    if entry.sample_sha256 is None and url_scheme(url) not in (None, "file") and folder not in _WARNED:
        _WARNED.add(folder)
        log.warning("%s: its index.json (before version 3) records no sha256 per sample, so parts of its shards read "
                    "from there are not verified (whole shards are); %s", folder, RESHARD_HINT)


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
                yield ShardSample(key, fields["jpg"], SampleMeta.from_json(fields["json"]))

