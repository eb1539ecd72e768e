"""SPEC -> shard list: a slug in the root, local paths/braces/globs, http(s) braces, hf:// braces,
fsspec URLs (s3://, gs://, file://, ...) with braces/globs, and webdataset's `pipe:COMMAND`.

Every shard comes with what its set's index.json says about it (samples, grid fps, cell runs), so
epoch lengths are computed exactly before any shard is opened.

A `pipe:` SPEC is a shell command the user typed: it runs only as given on the command line (after
brace expansion), one per shard. Shard URLs otherwise come from a folder and the index's names, which
are checked (`layout.validate_shard_name`), so a fetched index.json or Hub listing can never make
wtours run a command."""

from __future__ import annotations

import glob
import hashlib
import os
import posixpath
import re
import shlex
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from braceexpand import braceexpand

from wtours.errors import UsageError, WtoursError
from wtours.layout import INDEX_FILE, SHARD_NAME_PATTERN, SLUG_PATTERN, Layout, shard_number
from wtours.shard.index import ShardIndex
from wtours.shard.plan import sample_cell

SPEC_SEPARATOR = "::"
HTTP_TIMEOUT = 60


@dataclass(frozen=True)
class ShardRef:
    url: str  # local path, http(s), hf:// or fsspec URL, or `pipe:COMMAND` (the user's, never an index's)
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


PIPE_PREFIX = "pipe:"
PIPE_WORD = re.compile(r"(?:^|\s)(pipe:)")


def split_specs(specs: str | Iterable[str]) -> list[str]:
    """One string with '::' or whitespace between specs, or a list of them. A `pipe:` SPEC is a shell
    command with spaces of its own: it runs to the next '::' (or the end of its string)."""
    items = [specs] if isinstance(specs, str) else list(specs)
    parts: list[str] = []
    for item in items:
        for chunk in item.split(SPEC_SEPARATOR):
            pipe = PIPE_WORD.search(chunk)
            if pipe is None:
                parts.extend(chunk.split())
                continue
            parts.extend(chunk[:pipe.start(1)].split())
            parts.append(chunk[pipe.start(1):].strip())  # the command as typed, its inner spaces kept
    return parts


@dataclass(frozen=True)
class ShardSet:
    """The shards a SPEC names in one set: `folder` holds its index.json and shard files (a local folder
    or a URL that `open_url` reads, also for a `pipe:` SPEC); `refs` are the shards as the SPEC reads them."""

    folder: str
    index: ShardIndex
    refs: tuple[ShardRef, ...]


def resolve(specs: str | Iterable[str], root: str | os.PathLike | None = None) -> list[ShardRef]:
    """All shards named by the specs, in order; fails before any work when one matches nothing."""
    return [ref for found in resolve_sets(specs, root) for ref in found.refs]


def resolve_sets(specs: str | Iterable[str], root: str | os.PathLike | None = None) -> list[ShardSet]:
    """The shard sets the specs name, with their shards, in order; each index is read once."""
    sets: list[ShardSet] = []
    parts = split_specs(specs)
    if not parts:
        raise UsageError("no shard SPEC given", "pass a slug (venice), a path pattern, an http(s)://, hf://, "
                                                 "s3:// (or other fsspec) pattern, or a pipe: command")
    for spec in parts:
        found = [s for s in _resolve_one(spec, Layout(root)) if s.refs]
        if not found:
            raise UsageError(f"SPEC {spec!r} matches no shard", _spec_hint(spec))
        sets.extend(found)
    return sets


def _spec_hint(spec: str) -> str:
    return ("a SPEC is a video slug with shards under --root, a folder holding index.json, a local pattern such as "
            "'/data/shards/venice/venice-{000000..000009}.tar', the same as an http(s)://, "
            "hf://datasets/USER/NAME/..., s3://, gs:// or file:// URL, or 'pipe:COMMAND' (e.g. "
            "'pipe:cat /data/venice/venice-{000000..000009}.tar'); run `wtours list` to see what is sharded")


def _known_name(slug: str, layout: Layout) -> bool:
    """A corpus video's slug, or a video registered (or a set being sharded) under the root."""
    from wtours.manifest import load_manifest

    return (slug in load_manifest().slugs or slug in layout.video_slugs()
            or slug in layout.sharded_slugs())


def _resolve_one(spec: str, layout: Layout) -> list[ShardSet]:
    if spec.startswith(PIPE_PREFIX):
        return _resolve_pipe(spec)
    if "://" in spec:
        return _resolve_remote(spec)
    if SLUG_PATTERN.match(spec) and "/" not in spec and not Path(spec).exists():
        if not layout.index_path(spec).is_file():
            if not _known_name(spec, layout):  # a typo, not a step left to run: a usage error
                raise UsageError(f"SPEC {spec!r} names no video: not a corpus video, nor one registered or "
                                 f"sharded under {layout.root}", _spec_hint(spec))
            raise WtoursError(f"SPEC {spec!r}: no shard index at {layout.index_path(spec)}",
                              f"run `wtours shard --city {spec}` first, or pass --root")
        return [_local_set(str(layout.shard_dir(spec)), None)]
    path = Path(spec).expanduser()
    if path.is_dir():
        return [_local_set(str(path), None)]
    if path.name == INDEX_FILE:
        return [_local_set(str(path.parent), None)]
    patterns = _expand(str(path))
    files = sorted({f for pattern in patterns for f in (glob.glob(pattern) or [])})
    # A name the braces spell out (no wildcard) that is not on disk is asked for, as it is from a server:
    # past the set's end it is an error naming the last shard, not a silently shorter range.
    asked = files + [p for p in patterns if not glob.has_magic(p) and not os.path.exists(p)
                     and Path(p).parent.joinpath(INDEX_FILE).is_file()]
    return [_local_set(folder, {Path(f).name for f in asked if str(Path(f).parent) == folder})
            for folder in sorted({str(Path(f).parent) for f in asked})]


def _local_set(folder: str, names: set[str] | None) -> ShardSet:
    index = _read_local_index(Path(folder) / INDEX_FILE)
    return ShardSet(folder, index, tuple(_refs_from_index(index, folder, names)))


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
        raise UsageError(f"{url!r} is not a valid hf:// URL: {problem}", HF_URL_HINT)
    return url


def _expand(spec: str) -> list[str]:
    try:
        return list(braceexpand(spec))
    except Exception as e:  # noqa: BLE001 (braceexpand's UnbalancedBracesError and friends)
        raise UsageError(f"SPEC {spec!r}: {e}", "braces must be balanced, e.g. 'venice-{000000..000013}.tar'") from e


def _resolve_remote(spec: str) -> list[ShardSet]:
    if spec.startswith("hf://"):
        urls = [check_hf_url(u) for u in _expand(spec)]
        if any(ch in spec for ch in "*?["):
            from wtours.hub.client import hub_errors

            with hub_errors(spec):
                urls = sorted(f"hf://{p}" for u in urls for p in _hf_fs().glob(u[len('hf://'):]))
    elif spec.startswith(("http://", "https://")):
        urls = _expand(spec)
    else:
        urls = _expand(spec)
        _fsspec_of(urls[0])  # an unknown scheme or a missing package fails here, naming it
        if any(ch in spec for ch in "*?["):
            urls = sorted(found for u in urls for found in _fsspec_glob(u))
    # A URL naming neither a shard nor an index is a set's folder (`s3://bucket/venice/`): its index names the shards.
    urls = [f"{u.rstrip('/')}/{INDEX_FILE}" if "." not in u.rstrip("/").rsplit("/", 1)[-1] else u for u in urls]
    sets: list[ShardSet] = []
    for folder in dict.fromkeys(posixpath.dirname(u) for u in urls):
        names: set[str] | None = {posixpath.basename(u) for u in urls if posixpath.dirname(u) == folder}
        if names == {INDEX_FILE}:
            names = None  # the spec named an index: take all its shards
        index = read_remote_index(f"{folder}/{INDEX_FILE}")
        sets.append(ShardSet(folder, index, tuple(_refs_from_index(index, folder, names))))
    return sets


# ------------------------------------------------------------------ fsspec URLs (s3://, gs://, file://, ...)

# The schemes wtours reads through fsspec, and the package each needs besides fsspec (None: fsspec itself).
FSSPEC_PACKAGES: dict[str, str | None] = {
    "file": None, "memory": None, "s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs",
    "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}


def url_scheme(url: str) -> str | None:
    """'s3' for 's3://...', 'pipe' for 'pipe:...', None for a local path."""
    if url.startswith(PIPE_PREFIX):
        return "pipe"
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep and scheme.isascii() and scheme.replace("+", "").isalnum() else None


def is_local(url: str) -> bool:
    """A file on this machine that is read as is: a path or a file:// URL (not verified against the index)."""
    return url_scheme(url) in (None, "file")


def _fsspec_of(url: str):
    """(filesystem, path) for an fsspec URL; a scheme wtours does not read, or a missing package, is a
    WtoursError naming what to install."""
    scheme = url_scheme(url) or ""
    if scheme not in FSSPEC_PACKAGES:
        raise UsageError(f"SPEC {url!r}: unsupported URL scheme {scheme}://",
                          "use a local path, http(s)://, hf://, " + ", ".join(f"{s}://" for s in FSSPEC_PACKAGES)
                          + " or 'pipe:COMMAND'")
    package = FSSPEC_PACKAGES[scheme]
    needs = "fsspec" + (f" and {package}" if package else "")
    try:
        import fsspec
    except ImportError as e:
        raise WtoursError(f"{scheme}:// URLs need the fsspec package, which is not installed",
                          f"pip install fsspec{' ' + package if package else ''}") from e
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:
        raise WtoursError(f"{scheme}:// URLs need the {package} package, which is not installed ({e})",
                          f"pip install {package}  (wtours reads {scheme}:// through {needs}; credentials "
                          "come from the usual environment of that package)") from e
    except (ValueError, TypeError, OSError) as e:
        raise WtoursError(f"{url!r}: {e}", "check the URL") from e


def _fsspec_glob(url: str) -> list[str]:
    fs, path = _fsspec_of(url)
    try:
        found = fs.glob(path)
    except Exception as e:  # noqa: BLE001 (each backend raises its own types: credentials, network, ...)
        raise WtoursError(f"{url}: cannot list ({type(e).__name__}: {e})",
                          "check the URL, the network and the credentials") from e
    return [fs.unstrip_protocol(p) for p in found]


def open_fsspec_at(url: str, offset: int = 0) -> IO[bytes]:
    """An fsspec file positioned at `offset`, read in blocks of HF_READ_BLOCK (a partial read fetches
    what it reads, by seek on a local file, Range requests on s3/gs)."""
    fs, path = _fsspec_of(url)
    try:
        stream = fs.open(path, "rb", block_size=HF_READ_BLOCK, cache_type="readahead")
    except FileNotFoundError as e:
        raise WtoursError(f"{url}: no such file", "check the URL; index.json must sit beside the shards") from e
    except Exception as e:  # noqa: BLE001 (backend errors: credentials, network, permissions)
        raise WtoursError(f"{url}: cannot open ({type(e).__name__}: {e})",
                          "check the URL, the network and the credentials") from e
    try:
        if offset:
            stream.seek(offset)
    except BaseException:
        stream.close()
        raise
    return stream


# ------------------------------------------------------------------ pipe:COMMAND


PIPE_INDEX_HINT = ("wtours reads a pipe: SPEC's index.json from the folder of the command's .tar argument: a local "
                   "folder (copy the set's index.json there), or beside an http(s)://, hf:// or fsspec URL; e.g. "
                   "'pipe:cat /data/venice/venice-{000000..000009}.tar' with /data/venice/index.json, or "
                   "'pipe:curl -s https://host/venice/venice-{000000..000009}.tar' with "
                   "https://host/venice/index.json")


def _resolve_pipe(spec: str) -> list[ShardSet]:
    """`pipe:COMMAND` -> one command per shard (braces expanded); each command's last argument ending in
    .tar names its shard, and the index beside that argument (never read by running the command)."""
    if not spec[len(PIPE_PREFIX):].strip():
        raise UsageError(f"SPEC {spec!r}: no command after 'pipe:'", PIPE_INDEX_HINT)
    by_folder: dict[str, dict[str, str]] = {}  # the .tar argument's folder -> shard name -> its pipe: URL
    for url in _expand(spec):
        target = _pipe_target(url)
        folder = (posixpath.dirname(target) if "://" in target else os.path.dirname(target)) or "."
        by_folder.setdefault(folder, {})[posixpath.basename(target)] = url
    sets: list[ShardSet] = []
    for folder, commands in by_folder.items():
        index = _pipe_index(spec, folder)
        refs = _refs_from_index(index, folder, set(commands))
        sets.append(ShardSet(folder, index, tuple(replace(r, url=commands[r.name]) for r in refs)))
    return sets


def _pipe_target(url: str) -> str:
    """The shard file a pipe: command reads: its last argument ending in .tar (a path or a URL)."""
    lexer = shlex.shlex(url[len(PIPE_PREFIX):], posix=True, punctuation_chars=True)  # `x.tar;` -> `x.tar`, `;`
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError as e:
        raise UsageError(f"SPEC {url!r}: {e}", "quote the command's arguments in pairs") from e
    target = next((w for w in reversed(words) if w.endswith(".tar")), None)
    if target is None:
        raise UsageError(f"SPEC {url!r}: the command names no .tar file",
                          "a pipe: command names the shard it reads, e.g. 'pipe:cat /data/venice/venice-000000.tar'; "
                          + PIPE_INDEX_HINT)
    return os.path.expanduser(target) if "://" not in target else target


def _pipe_index(spec: str, folder: str) -> ShardIndex:
    if url_scheme(folder) is None:  # a path: the index must be here (the command may read another machine's)
        if not (Path(folder) / INDEX_FILE).is_file():
            raise UsageError(f"SPEC {spec!r}: no {INDEX_FILE} in {folder!r} on this machine", PIPE_INDEX_HINT)
        return _read_local_index(Path(folder) / INDEX_FILE)
    try:
        return read_remote_index(f"{folder}/{INDEX_FILE}")
    except WtoursError as e:
        raise WtoursError(f"SPEC {spec!r}: cannot read the index beside its shards: {e.message}",
                          PIPE_INDEX_HINT) from e


# Credentials a shard URL or pipe: command may carry (curl -H 'Authorization: Bearer ...', user:password@,
# signed query strings, Hub tokens): never shown in warnings, errors or log.jsonl (`shown_url`).
_SECRETS = (
    re.compile(r"(?i)(authorization:\s*(?:bearer\s+|basic\s+|token\s+)?)[^'\"\s]+"),
    re.compile(r"(?i)(\bbearer\s+)[^'\"\s]+"),
    re.compile(r"(://[^/@\s:]+:)[^/@\s]+(?=@)"),
    re.compile(r"(?i)([?&](?:token|access_token|sig|signature|x-amz-signature|x-amz-credential|"
               r"x-goog-signature|x-goog-credential)=)[^&'\"\s]+"),
    re.compile(r"()\bhf_[A-Za-z0-9]{8,}"),
)


def shown_url(url: str) -> str:
    """`url` as warnings, errors and logs show it: credentials replaced by ***."""
    for pattern in _SECRETS:
        url = pattern.sub(lambda m: m.group(1) + "***", url)
    return url


PIPE_STOP_TIMEOUT = 5  # seconds a command has to end after SIGTERM before it is killed


class PipeStream:
    """The output of a `pipe:` command (run by the shell, as webdataset does). Reading it to its end
    checks the exit status: a failed command is an OSError (the shard is counted as bad) naming the
    command and the end of its stderr. Closing it before the end stops the command."""

    def __init__(self, url: str):
        self.url, self.command = shown_url(url), url[len(PIPE_PREFIX):]
        self.stderr = tempfile.TemporaryFile(prefix="wtours-pipe-")  # a file: a chatty command never blocks
        # its own process group, so that closing the stream early stops the whole pipeline (curl | zstd -d)
        self.process = subprocess.Popen(self.command, shell=True, stdin=subprocess.DEVNULL,  # noqa: S602 (the user's)
                                        stdout=subprocess.PIPE, stderr=self.stderr, start_new_session=True)
        self.checked = False

    def __repr__(self) -> str:
        return f"<{self.url}>"

    def read(self, size: int = -1, /) -> bytes:
        assert self.process.stdout is not None
        data = self.process.stdout.read(size if size is not None else -1)
        if not data and size != 0 and not self.checked:
            self.checked = True
            status = self.process.wait()
            if status != 0:
                self.stderr.seek(0)
                tail = self.stderr.read()[-500:].decode("utf-8", "replace").strip().splitlines()
                raise OSError(f"{self.url}: the command exited with status {status}"
                              + (f" ({shown_url(tail[-1])})" if tail else ""))
        return data

    def close(self) -> None:
        try:
            if self.process.poll() is None:  # stopped early (a part read, an error): end the command
                self._signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=PIPE_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self._signal(signal.SIGKILL)
            self.process.wait()
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.stderr.close()

    def _signal(self, number: int) -> None:
        try:
            os.killpg(self.process.pid, number)
        except ProcessLookupError:  # ended meanwhile
            pass


def _read_local_index(path: Path) -> ShardIndex:
    index = ShardIndex.read(path)
    if index is None:
        raise WtoursError(f"no shard index at {path}",
                          "shards made by `wtours shard` have index.json beside them; "
                          "rerun `wtours shard` to finish it")
    return index


def read_remote_index(url: str) -> ShardIndex:
    """An index.json at an http(s), hf:// or fsspec URL (never a pipe: command)."""
    if url_scheme(url) == "pipe":
        raise WtoursError(f"{url!r}: an index is never read by running a command", PIPE_INDEX_HINT)
    with open_url(url) as f:
        return ShardIndex.parse(f.read(), url)


def _refs_from_index(index: ShardIndex, folder: str, names: set[str] | None) -> list[ShardRef]:
    listed = {s.name for s in index.shards}
    if names is not None and (unknown := sorted(names - listed - {INDEX_FILE})):
        raise _unlisted_error(index, folder, unknown)
    join = posixpath.join if "://" in folder else os.path.join
    t_decimals = 6 if index.version == 1 else None
    return [ShardRef(url=join(folder, s.name), name=s.name, slug=index.slug, samples=s.samples, fps=index.fps,
                     cell_runs=s.cell_runs, t_start=s.t_start, t_end=s.t_end, offsets=s.offsets,
                     t_decimals=t_decimals, bytes=s.bytes, sha256=s.sha256)
            for s in index.shards if names is None or s.name in names]


def _unlisted_error(index: ShardIndex, folder: str, unknown: list[str]) -> WtoursError:
    """Shards a SPEC names that the index does not list: a range past the set's end is the user's to
    fix (a usage error saying where the set ends); any other name means the index and shards disagree."""
    last = index.shards[-1].name if index.shards else None
    last_number = shard_number(last) if last else -1
    past = [n for n in unknown if (m := SHARD_NAME_PATTERN.fullmatch(n)) and m.group("slug") == index.slug
            and int(m.group("number")) > last_number]
    shown = ", ".join(map(repr, unknown[:3])) + (" ..." if len(unknown) > 3 else "")
    if past and len(past) == len(unknown):
        span = f"{index.shards[0].name}..{last}" if last else "none"
        return UsageError(f"{folder}: the SPEC asks for {shown}, past the last shard of {index.slug} "
                          f"({len(index.shards)} shards: {span})",
                          f"end the range at {last_number:06d}, e.g. '{index.slug}-{{000000..{last_number:06d}}}.tar', "
                          "or give the set's folder or slug to take every shard")
    return WtoursError(f"{folder}: {shown} not listed in its index.json",
                       "the index and the shards disagree: rerun `wtours shard` for this video")


# ------------------------------------------------------------------ opening


def _hf_fs():
    from wtours.hub.client import require_hub

    return require_hub().HfFileSystem()  # endpoint (HF_ENDPOINT) and token (login, HF_TOKEN) from huggingface_hub


def open_url(url: str) -> IO[bytes]:
    """A readable binary stream for a local path, an http(s), hf:// or fsspec URL (streamed), or the
    output of a `pipe:` command (only ever the user's: see the module's docstring)."""
    if url.startswith(PIPE_PREFIX):
        return PipeStream(url)  # type: ignore[return-value]
    if url.startswith(("http://", "https://")):
        try:
            return urllib.request.urlopen(url, timeout=HTTP_TIMEOUT)  # noqa: S310 (scheme checked)
        except urllib.error.HTTPError as e:
            raise WtoursError(f"{url}: HTTP {e.code} {e.reason}", "check the URL (and access rights)") from e
        except urllib.error.URLError as e:
            raise WtoursError(f"{url}: {e.reason}", "check the network and the URL") from e
    if url.startswith("hf://"):
        return _open_hf(url)
    if url_scheme(url) is not None:
        return open_fsspec_at(url)
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
    """`raw`, the whole shard `ref` read from its start, checked against the index when it comes from
    elsewhere (http(s), hf://, fsspec URLs but file://, pipe: commands); a local file, or a ref without a
    recorded checksum, is returned as is."""
    if is_local(ref.url) or ref.sha256 is None or ref.bytes is None:
        return raw
    return VerifiedShard(raw, shown_url(ref.url), ref.bytes, ref.sha256)  # type: ignore[return-value]
