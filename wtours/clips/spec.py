"""SPEC -> shard list: a slug in the root, local paths/braces/globs, http(s) braces, hf:// braces.

Every shard comes with what its set's index.json says about it (samples, grid fps, cell runs), so
epoch lengths are computed exactly before any shard is opened."""

from __future__ import annotations

import glob
import hashlib
import os
import posixpath
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from braceexpand import braceexpand

from wtours.errors import WtoursError
from wtours.layout import INDEX_FILE, SLUG_PATTERN, Layout
from wtours.shard.index import ShardIndex
from wtours.shard.plan import sample_cell

SPEC_SEPARATOR = "::"
HTTP_TIMEOUT = 60


@dataclass(frozen=True)
class ShardRef:
    url: str  # local path, http(s) URL or hf:// URL
    name: str
    slug: str
    samples: int
    fps: float  # the set's sampling grid (cells per second)
    cell_runs: tuple[tuple[int, int], ...]
    t_start: float
    t_end: float
    offsets: tuple[int, ...] | None = None  # each sample's byte offset in the tar (index version 2)
    t_decimals: int | None = None  # version-1 indexes rounded the samples' `t` to 6 decimals
    bytes: int | None = None  # the shard's size and sha256 as its index records them: a whole remote read
    sha256: str | None = None  # is checked against them (verified_whole)

    def cell_of_sample(self, t: float) -> int:
        """The grid cell of one of this shard's samples, from its recorded `t` (shard.plan.sample_cell)."""
        return sample_cell(t, self.fps, self.t_decimals)


def split_specs(specs: str | Iterable[str]) -> list[str]:
    """One string with '::' or whitespace between specs, or a list of them."""
    items = [specs] if isinstance(specs, str) else list(specs)
    return [part for item in items for chunk in item.split(SPEC_SEPARATOR) for part in chunk.split()]


def resolve(specs: str | Iterable[str], root: str | os.PathLike | None = None) -> list[ShardRef]:
    """All shards named by the specs, in order; fails before any work when one matches nothing."""
    refs: list[ShardRef] = []
    parts = split_specs(specs)
    if not parts:
        raise WtoursError("no shard SPEC given", "pass a slug (venice), a path pattern, an http(s) or hf:// pattern")
    for spec in parts:
        found = _resolve_one(spec, Layout(root))
        if not found:
            raise WtoursError(f"SPEC {spec!r} matches no shard", _spec_hint(spec))
        refs.extend(found)
    return refs


def shard_sets(specs: str | Iterable[str], root: str | os.PathLike | None = None) -> list[tuple[str, ShardIndex]]:
    """The (folder, index) of every shard set the specs touch: for tools that read whole videos (stats)."""
    folders = dict.fromkeys(posixpath.dirname(r.url) if "://" in r.url else os.path.dirname(r.url)
                            for r in resolve(specs, root))
    return [(f, read_remote_index(f"{f}/{INDEX_FILE}") if "://" in f else _read_local_index(Path(f) / INDEX_FILE))
            for f in folders]


def _spec_hint(spec: str) -> str:
    return ("a SPEC is a video slug with shards under --root, a folder holding index.json, a local pattern such as "
            "'/data/shards/venice/venice-{000000..000009}.tar', or the same as an http(s):// or "
            "hf://datasets/USER/NAME/... URL; run `wtours list` to see what is sharded")


def _resolve_one(spec: str, layout: Layout) -> list[ShardRef]:
    if "://" in spec:
        return _resolve_remote(spec)
    if SLUG_PATTERN.match(spec) and "/" not in spec and not Path(spec).exists():
        if not layout.index_path(spec).is_file():
            raise WtoursError(f"SPEC {spec!r}: no shard index at {layout.index_path(spec)}",
                              f"run `wtours shard --city {spec}` first, or pass --root")
        return _refs_from_index(_read_local_index(layout.index_path(spec)), str(layout.shard_dir(spec)), None)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _refs_from_index(_read_local_index(path / INDEX_FILE), str(path), None)
    if path.name == INDEX_FILE:
        return _refs_from_index(_read_local_index(path), str(path.parent), None)
    files = sorted({f for pattern in _expand(str(path)) for f in (glob.glob(pattern) or [])})
    refs: list[ShardRef] = []
    for folder in sorted({str(Path(f).parent) for f in files}):
        names = {Path(f).name for f in files if str(Path(f).parent) == folder}
        refs.extend(_refs_from_index(_read_local_index(Path(folder) / INDEX_FILE), folder, names))
    return refs


HF_URL_HINT = ("write hf://datasets/USER/NAME[@REVISION]/PATH, e.g. "
               "'hf://datasets/alice/walking-tours/venice/venice-{000000..000013}.tar' or "
               "'hf://datasets/alice/walking-tours/venice/index.json'")


def check_hf_url(url: str) -> str:
    """An hf:// URL wtours can read: a dataset repo (USER/NAME), an optional non-empty @revision, and a
    path of plain names (no empty, '.' or '..' parts). Checked before the client parses it."""
    from wtours.hub.paths import REPO_ID_PATTERN

    body = url[len("hf://"):]
    kind, _, rest = body.partition("/")
    parts = rest.split("/")
    problem = None
    if kind != "datasets":
        problem = "it does not start with hf://datasets/ (wtours reads shards from dataset repos)"
    elif len(parts) < 3:
        problem = "it names no file: it needs USER/NAME and a path in the repo"
    else:
        repo, _, revision = f"{parts[0]}/{parts[1]}".partition("@")
        if not REPO_ID_PATTERN.match(repo) or ".." in repo or "--" in repo:
            problem = f"{repo!r} is not a Hub repository name"
        elif "@" in f"{parts[0]}/{parts[1]}" and not revision:
            problem = "the revision after '@' is empty"
        elif any(part in ("", ".", "..") or any(ord(c) < 32 for c in part) for part in parts[2:]):
            problem = "its path has an empty, '.' or '..' part"
    if problem:
        raise WtoursError(f"{url!r} is not a valid hf:// URL: {problem}", HF_URL_HINT)
    return url


def _expand(spec: str) -> list[str]:
    try:
        return list(braceexpand(spec))
    except Exception as e:  # noqa: BLE001 (braceexpand's UnbalancedBracesError and friends)
        raise WtoursError(f"SPEC {spec!r}: {e}", "braces must be balanced, e.g. 'venice-{000000..000013}.tar'") from e


def _resolve_remote(spec: str) -> list[ShardRef]:
    if spec.startswith("hf://"):
        urls = [check_hf_url(u) for u in _expand(spec)]
        if any(ch in spec for ch in "*?["):
            from wtours.hub.client import hub_errors

            with hub_errors(spec):
                urls = sorted(f"hf://{p}" for u in urls for p in _hf_fs().glob(u[len('hf://'):]))
    elif spec.startswith(("http://", "https://")):
        urls = _expand(spec)
    else:
        raise WtoursError(f"SPEC {spec!r}: unsupported URL scheme", "use a local path, http(s):// or hf://")
    refs: list[ShardRef] = []
    for folder in dict.fromkeys(posixpath.dirname(u) for u in urls):
        names: set[str] | None = {posixpath.basename(u) for u in urls if posixpath.dirname(u) == folder}
        if names == {INDEX_FILE}:
            names = None  # the spec named an index: take all its shards
        refs.extend(_refs_from_index(read_remote_index(f"{folder}/{INDEX_FILE}"), folder, names))
    return refs


def _read_local_index(path: Path) -> ShardIndex:
    index = ShardIndex.read(path)
    if index is None:
        raise WtoursError(f"no shard index at {path}",
                          "shards made by `wtours shard` have index.json beside them; "
                          "rerun `wtours shard` to finish it")
    return index


def read_remote_index(url: str) -> ShardIndex:
    with open_url(url) as f:
        return ShardIndex.parse(f.read(), url)


def _refs_from_index(index: ShardIndex, folder: str, names: set[str] | None) -> list[ShardRef]:
    listed = {s.name for s in index.shards}
    if names is not None and (unknown := sorted(names - listed - {INDEX_FILE})):
        raise WtoursError(f"{folder}: {', '.join(map(repr, unknown[:3]))} not listed in its index.json",
                          "the index and the shards disagree: rerun `wtours shard` for this video")
    join = posixpath.join if "://" in folder else os.path.join
    t_decimals = 6 if index.version == 1 else None
    return [ShardRef(url=join(folder, s.name), name=s.name, slug=index.slug, samples=s.samples, fps=index.fps,
                     cell_runs=s.cell_runs, t_start=s.t_start, t_end=s.t_end, offsets=s.offsets,
                     t_decimals=t_decimals, bytes=s.bytes, sha256=s.sha256)
            for s in index.shards if names is None or s.name in names]


# ------------------------------------------------------------------ opening


def _hf_fs():
    from wtours.hub.client import require_hub

    return require_hub().HfFileSystem()  # endpoint (HF_ENDPOINT) and token (login, HF_TOKEN) from huggingface_hub


def open_url(url: str) -> IO[bytes]:
    """A readable binary stream for a local path, an http(s) URL or an hf:// URL (streamed)."""
    if url.startswith(("http://", "https://")):
        try:
            return urllib.request.urlopen(url, timeout=HTTP_TIMEOUT)  # noqa: S310 (scheme checked)
        except urllib.error.HTTPError as e:
            raise WtoursError(f"{url}: HTTP {e.code} {e.reason}", "check the URL (and access rights)") from e
        except urllib.error.URLError as e:
            raise WtoursError(f"{url}: {e.reason}", "check the network and the URL") from e
    if url.startswith("hf://"):
        return _open_hf(url)
    return open(url, "rb")


HF_READ_BLOCK = 4 << 20  # bytes per Range request when reading part of an hf:// shard


def open_hf_at(url: str, offset: int) -> IO[bytes]:
    """An hf:// file positioned at `offset`: huggingface_hub's buffered file fetches what is read with
    Range requests of HF_READ_BLOCK bytes, so a slot reading part of a shard skips the rest."""
    from wtours.hub.client import hub_errors

    with hub_errors(url):
        stream = _hf_fs().open(url[len("hf://"):], "rb", block_size=HF_READ_BLOCK, cache_type="readahead")
        try:
            stream.seek(offset)
            stream.read(0)
        except BaseException:
            stream.close()
            raise
        return stream


def _open_hf(url: str) -> IO[bytes]:
    """Stream an hf:// file with one GET (the client resumes a broken stream once with a Range request).

    The first read(0) opens the connection, so a missing file, a private repo without a token or a
    revoked token fails here, as a WtoursError with a login hint (the token itself is never shown)."""
    from wtours.hub.client import hub_errors

    with hub_errors(url):
        stream = _hf_fs().open(url[len("hf://"):], "rb", block_size=0)
        try:
            stream.read(0)
        except BaseException:
            stream.close()
            raise
        return stream


# ------------------------------------------------------------------ verifying what a server sends

VERIFY_SPOOL_BYTES = 64 << 20  # a verified shard is held in memory up to this size, then in a temporary file
VERIFY_BLOCK = 10240  # tarfile's own read size: a stream that breaks keeps what arrived before the break, as before


class ShardMismatchError(OSError):
    """A remote shard whose bytes are not the ones its index describes (replaced, damaged or hostile).
    An OSError, so the pipeline's stages count it as a bad shard and go on."""


class VerifiedShard:
    """A whole remote shard, read to its end and checked against its index entry (size and sha256)
    before its first byte is served: a replaced shard contributes no sample at all.

    The bytes are held in a spooled temporary file (VERIFY_SPOOL_BYTES in memory, the rest on disk,
    removed on close). More bytes than the index records stop the read at once. A stream that breaks
    before its end cannot be verified, so none of it is served: the shard is counted as bad (a server
    could otherwise send replaced samples and then drop the connection). Partial reads (byte ranges
    of a shard) are not wrapped: they trust the server (docs/hub.md)."""

    def __init__(self, raw: IO[bytes], url: str, size: int, sha256: str):
        self.raw, self.url, self.size, self.sha256 = raw, url, size, sha256
        self.spool: IO[bytes] | None = None
        self.failed = False

    def __repr__(self) -> str:  # webdataset appends str(stream) to the errors it reports
        return f"<verified shard {self.url}>"

    def _fill(self) -> None:
        spool = tempfile.SpooledTemporaryFile(max_size=VERIFY_SPOOL_BYTES, prefix="wtours-shard-")
        digest, count = hashlib.sha256(), 0
        try:
            while True:
                block = self.raw.read(VERIFY_BLOCK)
                if not block:
                    break
                count += len(block)
                if count > self.size:
                    raise ShardMismatchError(f"{self.url}: the server sent more than the {self.size} bytes its "
                                             "index.json records (replaced or hostile shard; skipped)")
                digest.update(block)
                spool.write(block)
        except ShardMismatchError:
            spool.close()
            raise
        except Exception as e:  # noqa: BLE001 (a broken stream: nothing unverified is served)
            spool.close()
            raise ShardMismatchError(f"{self.url}: the stream broke after {count} of {self.size} bytes ({e}); "
                                     "an unverified shard is not used (skipped)") from e
        if count != self.size or digest.hexdigest() != self.sha256:
            spool.close()
            what = (f"the server sent {count} bytes, its index.json records {self.size}" if count != self.size
                    else "its sha256 is not the one its index.json records")
            raise ShardMismatchError(f"{self.url}: {what} (replaced or damaged on the server; skipped)")
        spool.seek(0)
        self.spool = spool

    def read(self, size: int = -1, /) -> bytes:
        if self.failed:
            return b""
        if self.spool is None:
            try:
                self._fill()
            except BaseException:
                self.failed = True
                raise
        assert self.spool is not None  # filled above, or failed (then `failed`)
        return self.spool.read(size if size is not None else -1)

    def close(self) -> None:
        try:
            self.raw.close()
        finally:
            if self.spool is not None:
                self.spool.close()


def verified_whole(ref: ShardRef, raw: IO[bytes]) -> IO[bytes]:
    """`raw`, the whole shard `ref` read from its start, checked against the index when it comes from a
    server (http(s), hf://); a local file, or a ref without a recorded checksum, is returned as is."""
    if "://" not in ref.url or ref.sha256 is None or ref.bytes is None:
        return raw
    return VerifiedShard(raw, ref.url, ref.bytes, ref.sha256)  # type: ignore[return-value]
