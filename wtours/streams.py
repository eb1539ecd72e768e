"""Byte streams of local and remote files: one scheme table (a path, file://, http(s)://, hf://, pipe:COMMAND,
other fsspec protocols) behind every opener: a whole file, a file from a byte offset (a byte range), a
listing of a pattern, and the readers that check what another machine sends against a shard's index: a whole
shard against its size and sha256, samples against their own sha256 (VerifiedPart), and the shards that failed
a check in this process (FAILED_SHARDS). Also the hf:// URL grammar (repo ids, revisions, URLs) shared with wtours.hub.

A leaf module: the standard library, fsspec, wtours.errors, wtours.redact and wtours.hfclient only.
A `pipe:` URL is a shell command the user typed (wtours.clips.spec: never one from an index). A URL is named
in messages only as wtours.redact.shown(url); credentials in an http(s) URL (user:password@) are sent as
Basic auth, its query as it is."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import IO, Any, Protocol
from urllib.parse import quote, unquote, urlsplit

from wtours.errors import UsageError, WtoursError
from wtours.hfclient import hub_errors, require_hub
from wtours.redact import scrub, shown

HTTP_TIMEOUT = 60  # seconds an http(s) server may go without answering
HF_READ_BLOCK = 4 << 20  # bytes per Range request when reading part of an hf:// or fsspec file
PIPE_PREFIX = "pipe:"

# The schemes read through fsspec, and the package each needs besides fsspec (None: fsspec itself).
FSSPEC_PACKAGES: dict[str, str | None] = {
    "file": None, "memory": None, "s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs",
    "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}


class ByteStream(Protocol):
    """What a reader needs of a file's bytes: a file, an HTTP response, an hf:// or fsspec stream, a pipe:
    command's output."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


# ------------------------------------------------------------------ the scheme table


def url_scheme(url: str) -> str | None:
    """'s3' for 's3://...', 'pipe' for 'pipe:...', None for a local path."""
    if url.startswith(PIPE_PREFIX):
        return "pipe"
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep and scheme.isascii() and scheme.replace("+", "").isalnum() else None


def kind_of(url: str) -> str:
    """Which opener reads `url`: 'path', 'http', 'hf', 'pipe' or 'fsspec' (an unknown scheme fails here)."""
    scheme = url_scheme(url)
    if scheme is None:
        return "path"
    if scheme in ("http", "https", "hf", "pipe"):
        return "http" if scheme == "https" else scheme
    if scheme not in FSSPEC_PACKAGES:
        raise UsageError(f"SPEC {shown(url)!r}: unsupported URL scheme {scheme}://",
                          "use a local path, http(s)://, hf://, " + ", ".join(f"{s}://" for s in FSSPEC_PACKAGES)
                          + " or 'pipe:COMMAND'")
    return "fsspec"


def open_url(url: str) -> IO[bytes]:
    """A readable binary stream of the whole file: a local path, an http(s), hf:// or fsspec URL (streamed),
    or the output of a `pipe:` command."""
    kind = kind_of(url)
    if kind == "http":
        return _urlopen(url)
    return _open_file(url, None) if kind == "hf" else open_at(url, 0)


def open_at(url: str, begin: int, end: int | None = None) -> IO[bytes]:
    """A stream of `url` from byte `begin` (up to `end`, exclusive, where a Range request can say so; the caller stops
    reading at `end`): a seek on a file, hf:// or fsspec URL, a Range request over http(s) (a server that ignores it is
    read from the start and the bytes before `begin` dropped; one that answers another offset is a mismatch), dropped
    bytes of a pipe: command's output."""
    kind = kind_of(url)
    if kind == "http":
        ranged = _urlopen(url, {"Range": f"bytes={begin}-{'' if end is None else end - 1}"})
        if getattr(ranged, "status", None) != 206:  # a server that ignores Range sends the whole file
            return _skipped(ranged, begin, url)  # its first `begin` bytes dropped
        answered = getattr(ranged, "headers", {}).get("Content-Range", "")
        if not answered.startswith(f"bytes {begin}-"):
            ranged.close()
            raise mismatch(url, f"asked for bytes from {begin}, the server answered {answered or 'no Content-Range'!r}")
        return ranged
    if kind == "pipe":
        return _skipped(PipeStream(url), begin, url)  # type: ignore[arg-type]
    if kind in ("hf", "fsspec"):
        return _open_file(url, begin)
    stream = open(url, "rb")
    stream.seek(begin)
    return stream


def glob_urls(pattern: str) -> list[str]:
    """The files an hf:// or fsspec URL pattern (`*`, `?`, `[...]`) matches, as URLs, sorted."""
    fs, path = _filesystem(pattern)
    with _failures(pattern, "list"):
        return sorted(fs.unstrip_protocol(p) for p in fs.glob(path))


def require_backend(url: str) -> None:
    """Fail now, naming what to install, when `url`'s scheme is unknown or its fsspec package is missing."""
    if kind_of(url) == "fsspec":
        _filesystem(url)


# ------------------------------------------------------------------ http(s)


def _urlopen(url: str, headers: dict[str, str] | None = None) -> IO[bytes]:
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    request = urllib.request.Request(parts._replace(netloc=host).geturl() if at else url, headers=headers or {})
    if at:  # user:password@ goes as Basic auth, to this host only (not to where it may redirect)
        user, _, password = userinfo.partition(":")
        token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
        request.add_unredirected_header("Authorization", f"Basic {token}")
    try:
        return urllib.request.urlopen(request, timeout=HTTP_TIMEOUT)  # noqa: S310 (the scheme is checked)
    except urllib.error.HTTPError as e:
        raise WtoursError(f"{shown(url)}: HTTP {e.code} {scrub(str(e.reason), url)}",
                          "check the URL (and access rights)") from e
    except urllib.error.URLError as e:
        raise WtoursError(f"{shown(url)}: {scrub(str(e.reason), url)}", "check the network and the URL") from e


SKIP_BLOCK = 1 << 20


def _skipped(raw: IO[bytes], count: int, url: str) -> IO[bytes]:
    """`raw` after reading and dropping its first `count` bytes (a stream that cannot seek)."""
    try:
        while count > 0:
            block = raw.read(min(count, SKIP_BLOCK))
            if not block:
                raise OSError(f"{shown(url)}: the stream ended {count} bytes before the part's first sample")
            count -= len(block)
    except BaseException:
        raw.close()
        raise
    return raw


# ------------------------------------------------------------------ hf:// URLs


HF_URL_HINT = ("write hf://datasets/USER/NAME[@REVISION]/PATH, e.g. "
               "'hf://datasets/alice/walking-tours/venice/venice-{000000..000013}.tar' or "
               "'hf://datasets/alice/walking-tours/venice/index.json'")
DEFAULT_REVISION = "main"
# The Hub's rule for user/org and repo names: letters, digits, '-', '_', '.', no leading/trailing '-' or '.'.
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_ID_PATTERN = re.compile(rf"^{_NAME}/{_NAME}\Z")  # \Z: `$` would let a trailing newline through
# A branch, tag or commit: git's ref characters, no `..`, no leading '-' or '/' (it is written into the
# card's code blocks and into URLs, so nothing that could end a string or a line).
REVISION_PATTERN = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./-]{0,199}\Z")


def is_repo_id(repo: str) -> bool:
    return bool(REPO_ID_PATTERN.match(repo or "")) and ".." not in repo and "--" not in repo


def validate_repo_id(repo: str) -> str:
    if not is_repo_id(repo):
        raise UsageError(f"{repo!r} is not a Hub repository name",
                          "use USER/NAME (or ORG/NAME), e.g. --repo alice/walking-tours")
    return repo


def validate_revision(revision: str) -> str:
    if not isinstance(revision, str) or not REVISION_PATTERN.match(revision) or ".." in revision \
            or revision.endswith(("/", ".lock")):
        raise UsageError(f"{revision!r} is not a branch, tag or commit name",
                         "use letters, digits, '-', '_', '.' and '/', e.g. --revision main or --revision fps1")
    return revision


def hf_url(repo: str, path: str, revision: str = DEFAULT_REVISION, repo_type: str = "dataset") -> str:
    """hf://datasets/USER/NAME[@rev]/path, the form HfFileSystem and `wtours train --shards` read (a model
    repo's: hf://USER/NAME[@rev]/path)."""
    at = "" if revision == DEFAULT_REVISION else "@" + quote(revision, safe="")
    return f"hf://{'' if repo_type == 'model' else repo_type + 's/'}{repo}{at}/{path}"


def check_hf_url(url: str) -> str:
    """An hf:// URL wtours can read: a dataset repo (USER/NAME), an optional non-empty @revision, and a
    path of plain names (no empty, '.' or '..' parts). Checked before the client parses it."""
    problem = _hf_url_problem(url)
    if problem:
        raise UsageError(f"{shown(url)!r} is not a valid hf:// URL: {problem}", HF_URL_HINT)
    return url


def _hf_url_problem(url: str) -> str | None:
    kind, _, rest = url[len("hf://"):].partition("/")
    parts = rest.split("/")
    if kind != "datasets":
        return "it does not start with hf://datasets/ (wtours reads shards from dataset repos)"
    if len(parts) < 3:
        return "it names no file: it needs USER/NAME and a path in the repo"
    repo, at, revision = f"{parts[0]}/{parts[1]}".partition("@")
    if not is_repo_id(repo):
        return f"{repo!r} is not a Hub repository name"
    if at and not revision:
        return "the revision after '@' is empty"
    if any(part in ("", ".", "..") or any(ord(c) < 32 for c in part) for part in parts[2:]):
        return "its path has an empty, '.' or '..' part"
    return None


# ------------------------------------------------------------------ hf:// and fsspec files (s3://, gs://, file://, ...)


def _filesystem(url: str) -> tuple[Any, str]:
    """(filesystem, path) of an hf:// or fsspec URL; a missing fsspec backend is a WtoursError naming what to
    install (fsspec itself is a dependency of wtours, its backends s3fs, gcsfs and adlfs are not)."""
    scheme = url_scheme(url) or ""
    if scheme == "hf":  # endpoint from HF_ENDPOINT, token from the login or HF_TOKEN
        return require_hub().HfFileSystem(), url[len("hf://"):]
    import fsspec

    package = FSSPEC_PACKAGES[scheme]
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:
        raise WtoursError(f"{scheme}:// URLs need the {package} package, which is not installed ({e})",
                          f"pip install {package}  (wtours reads {scheme}:// through fsspec and {package}; credentials "
                          "come from the usual environment of that package)") from e
    except (ValueError, TypeError, OSError) as e:
        raise WtoursError(f"{shown(url)!r}: {scrub(str(e), url)}", "check the URL") from e


def _open_file(url: str, offset: int | None) -> IO[bytes]:
    """An hf:// or fsspec file from byte `offset`, read in blocks of HF_READ_BLOCK: a partial read fetches what it
    reads (a seek on a local file, Range requests on hf://, s3, gs), so a reader of part of a shard skips the rest.
    A whole hf:// file (`offset` None) is streamed with one GET instead (the client resumes a broken stream once with
    a Range request). The first read(0) opens that stream's connection, so a missing file, a private repo without a
    token or a revoked token fails here, as a WtoursError with a login hint (the token itself is never shown)."""
    fs, path = _filesystem(url)
    whole = offset is None and kind_of(url) == "hf"
    options = {"block_size": 0} if whole else {"block_size": HF_READ_BLOCK, "cache_type": "readahead"}
    with _failures(url, "open"):
        stream = fs.open(path, "rb", **options)
        try:
            if offset:
                stream.seek(offset)
            stream.read(0)
        except BaseException:
            stream.close()
            raise
    return stream


@contextlib.contextmanager
def _failures(url: str, action: str) -> Iterator[None]:
    """Failures to open or list (`action`) an hf:// or fsspec URL in the block as a WtoursError naming it: the
    Hub's as hfclient describes them, other backends' own exception types (credentials, network, ...) with a hint."""
    if kind_of(url) == "hf":
        with hub_errors(url):
            yield
        return
    try:
        yield
    except Exception as e:  # noqa: BLE001 (each backend raises its own types: credentials, network, permissions)
        if action == "open" and isinstance(e, FileNotFoundError):
            raise WtoursError(f"{shown(url)}: no such file",
                              "check the URL; index.json must sit beside the shards") from e
        raise WtoursError(f"{shown(url)}: cannot {action} ({type(e).__name__}: {scrub(str(e), url)})",
                          "check the URL, the network and the credentials") from e


# ------------------------------------------------------------------ pipe:COMMAND


PIPE_STOP_TIMEOUT = 5  # seconds a command has to end after SIGTERM before it is killed


class PipeStream:
    """The output of a `pipe:` command (run by the shell, as webdataset does). Reading it to its end
    checks the exit status: a failed command is an OSError (the shard is counted as bad) naming the
    command and the end of its stderr. Closing it before the end stops the command."""

    def __init__(self, url: str):
        self.url, self.command = shown(url), url[len(PIPE_PREFIX):]
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
                              + (f" ({scrub(tail[-1], PIPE_PREFIX + self.command)})" if tail else ""))
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
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile
            os.killpg(self.process.pid, number)


# ------------------------------------------------------------------ verifying what a server sends

VERIFY_SPOOL_BYTES = 64 << 20  # a verified shard is held in memory up to this size, then in a temporary file
VERIFY_BLOCK = 10240  # tarfile's own read size: a stream that breaks keeps what arrived before the break, as before


class ShardMismatchError(OSError):
    """A remote shard whose bytes are not the ones its index describes (replaced, damaged or hostile).
    An OSError, so the pipeline's stages count it as a bad shard and go on."""


FAILED_SHARDS: dict[str, str] = {}  # shard URL (redacted) -> the check it failed: never read again in this process


def mismatch(url: str, what: str) -> ShardMismatchError:
    """`url` failed a check: remembered in FAILED_SHARDS, and the error to raise."""
    FAILED_SHARDS.setdefault(shown(url), what)
    return ShardMismatchError(f"{shown(url)}: {what}")


class VerifiedPart:
    """Consecutive samples of a shard: `spans` gives each one's size and the sha256 its index records (None: not
    checked, a local file). A sample is read whole and checked before its first byte is served; then `tail`.
    Other bytes, or a stream that ends inside a sample, are a mismatch; a stream that breaks serves nothing of
    the sample it was in (an OSError, not remembered: the next read may succeed)."""

    def __init__(self, raw: ByteStream, url: str, spans: list[tuple[int, str | None]], first: int, tail: bytes):
        self.raw, self.url, self.spans, self.sample, self.tail = raw, shown(url), iter(spans), first - 1, tail
        self.buffer, self.position = b"", 0

    def __repr__(self) -> str:  # webdataset appends str(stream) to the errors it reports
        return f"<verified shard {self.url}>"

    def read(self, size: int = -1, /) -> bytes:
        if self.position == len(self.buffer):
            try:
                self.buffer, self.position = self._next(), 0
            except BaseException:
                self.spans, self.tail = iter(()), b""  # nothing more of a shard after a failure
                raise
        size = len(self.buffer) if size is None or size < 0 else size
        data = self.buffer[self.position:self.position + size]
        self.position += len(data)
        return data

    def _next(self) -> bytes:
        self.sample += 1
        if (span := next(self.spans, None)) is None:
            data, self.tail = self.tail, b""
            return data
        size, sha256 = span
        chunks, count = [], 0
        try:
            while count < size and (block := self.raw.read(size - count)):
                chunks.append(block)
                count += len(block)
        except Exception as e:  # noqa: BLE001 (a broken stream: nothing of this sample is served)
            raise OSError(f"{self.url}: the stream broke inside sample {self.sample} ({e})") from e
        data = b"".join(chunks)
        if count < size:
            what = f"the stream ended inside sample {self.sample}, {count} of its {size} bytes"
            raise mismatch(self.url, f"{what} (replaced or damaged; skipped)") if sha256 else OSError(
                f"{self.url}: {what}")
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise mismatch(self.url, f"sample {self.sample}'s sha256 is not the one its index.json records "
                                     "(replaced or damaged on the server, or served from another offset; skipped)")
        return data

    def close(self) -> None:
        self.raw.close()


class VerifiedShard:
    """A whole remote shard, read to its end and checked against its index entry (size and sha256) before its
    first byte is served: a replaced shard contributes no sample at all. The bytes are held in a spooled
    temporary file (VERIFY_SPOOL_BYTES in memory, the rest on disk, removed on close). More bytes than the index
    records stop the read at once. A stream that breaks before its end cannot be verified, so none of it is
    served: the shard is counted as bad (a server could otherwise send replaced samples and then drop the
    connection). For indexes without per-sample sha256 (versions 1 and 2); VerifiedPart checks version 3's."""

    def __init__(self, raw: ByteStream, url: str, size: int, sha256: str):
        self.raw, self.url, self.size, self.sha256 = raw, url, size, sha256
        self.spool = tempfile.SpooledTemporaryFile(max_size=VERIFY_SPOOL_BYTES, prefix="wtours-shard-")
        self.checked = False

    def __repr__(self) -> str:  # webdataset appends str(stream) to the errors it reports
        return f"<verified shard {self.url}>"

    def read(self, size: int = -1, /) -> bytes:
        if not self.checked:  # once: a shard that fails the check serves nothing (its spool stays at its end)
            self.checked = True
            self._copy_checked()
            self.spool.seek(0)
        return self.spool.read(size if size is not None else -1)

    def _copy_checked(self) -> None:
        """Copy the raw stream into the spool (never more than the index records), then check its size and sha256."""
        digest, count = hashlib.sha256(), 0
        try:
            while block := self.raw.read(VERIFY_BLOCK):
                count += len(block)
                if count > self.size:
                    raise mismatch(self.url, f"the server sent more than the {self.size} bytes its index.json "
                                             "records (replaced or hostile shard; skipped)")
                digest.update(block)
                self.spool.write(block)
        except ShardMismatchError:
            raise
        except Exception as e:  # noqa: BLE001 (a broken stream: nothing unverified is served)
            raise OSError(f"{self.url}: the stream broke after {count} of {self.size} bytes ({e}); "
                          "an unverified shard is not used (skipped)") from e
        if count != self.size or digest.hexdigest() != self.sha256:
            what = (f"the server sent {count} bytes, its index.json records {self.size}" if count != self.size
                    else "its sha256 is not the one its index.json records")
            raise mismatch(self.url, f"{what} (replaced or damaged on the server; skipped)")

    def close(self) -> None:
        try:
            self.raw.close()
        finally:
            self.spool.close()


def verified_whole(url: str, raw: IO[bytes], size: int | None, sha256: str | None) -> IO[bytes]:
    """`raw`, the whole file at `url` read from its start, checked against the size and sha256 its index
    records when it comes from elsewhere (http(s), hf://, fsspec URLs but file://, pipe: commands); a local
    file (a path or a file:// URL), or one without a recorded checksum, is returned as is."""
    if url_scheme(url) in (None, "file") or sha256 is None or size is None:
        return raw
    return VerifiedShard(raw, shown(url), size, sha256)  # type: ignore[return-value]
