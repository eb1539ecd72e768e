"""The huggingface_hub client: which repo and endpoint, the login, listing and reading files, and the
Hub's errors turned into messages a user can act on (the token is never shown)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from wtours.errors import UsageError, WtoursError
from wtours.hub.paths import DEFAULT_REVISION, REPO_TYPE, hf_url, source_path, validate_repo_id, validate_revision

log = logging.getLogger(__name__)
T = TypeVar("T")

TIMEOUT_ENV = "WTOURS_HUB_TIMEOUT"  # seconds without an answer before a Hub request fails
DEFAULT_TIMEOUT = 60.0
RETRIES_ENV = "WTOURS_HUB_RETRIES"  # retries of a rate-limited (429) commit or preupload
DEFAULT_RETRIES = 5
MAX_RETRY_WAIT = 60.0

LOGIN_HINT = ("log in with `hf auth login` (`huggingface-cli login` in older huggingface_hub) or set HF_TOKEN; "
              "create a token at https://huggingface.co/settings/tokens")


@dataclass(frozen=True)
class HubTarget:
    """A dataset repo at a revision. `endpoint` and `token` default to huggingface_hub's own settings
    (HF_ENDPOINT, and the token of `hf auth login` or HF_TOKEN)."""

    repo: str
    revision: str = DEFAULT_REVISION
    endpoint: str | None = None
    token: str | None = field(default=None, repr=False)  # repr=False: never in a log line or traceback

    def __post_init__(self) -> None:
        validate_repo_id(self.repo)
        validate_revision(self.revision)


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    blob_id: str  # git blob id (of the content, or of the LFS pointer)
    sha256: str | None  # LFS files only: the content's sha256


def require_hub():
    try:
        import huggingface_hub
    except ImportError as e:
        raise WtoursError("the Hub commands need huggingface_hub", "pip install 'wtours[hub]'") from e
    _bound_client_timeouts(huggingface_hub)
    return huggingface_hub


def request_timeout() -> float:
    """Seconds a Hub request may go without an answer (connect, each read, each write): WTOURS_HUB_TIMEOUT."""
    try:
        value = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT)
    except ValueError as e:
        raise WtoursError(f"{TIMEOUT_ENV}={os.environ.get(TIMEOUT_ENV)!r} is not a number of seconds",
                          f"e.g. {TIMEOUT_ENV}=60") from e
    return value if value > 0 else DEFAULT_TIMEOUT


_client_bounded = False


def _bound_client_timeouts(huggingface_hub) -> None:
    """huggingface_hub's HTTP client has no timeout (and many API calls pass `timeout=None`), so a
    server that stops answering hangs push and pull forever. Every request of this process gets
    `request_timeout()` for whatever the caller left unbounded (its own, smaller limits stay)."""
    global _client_bounded
    if _client_bounded:
        return
    _client_bounded = True
    try:
        from huggingface_hub.utils import _http
    except ImportError:  # pragma: no cover (huggingface_hub < 1.0: requests, with its own timeouts)
        return
    # huggingface_hub's loggers (set up by the import above) print through their own handler and
    # propagate too: where the application has configured logging (the CLI), every warning came out twice.
    if logging.getLogger().handlers:
        library = logging.getLogger("huggingface_hub")
        for handler in [h for h in library.handlers if type(h) is logging.StreamHandler]:
            library.removeHandler(handler)
    logging.getLogger("huggingface_hub.utils._http").addFilter(_FirstRetryOnly())
    http = getattr(_http, "httpx2", None) or getattr(_http, "httpx", None)
    hook = getattr(_http, "hf_request_event_hook", None)
    set_factory = getattr(huggingface_hub, "set_client_factory", None)
    if http is None or set_factory is None:  # pragma: no cover
        return
    limit = request_timeout()

    class BoundedTransport(http.HTTPTransport):  # type: ignore[name-defined]
        def handle_request(self, request):
            timeout = dict(request.extensions.get("timeout") or {})
            for key in ("connect", "read", "write", "pool"):
                if timeout.get(key) is None:
                    timeout[key] = limit
            request.extensions = {**request.extensions, "timeout": timeout}
            return super().handle_request(request)

    def factory():
        return http.Client(event_hooks={"request": [hook]} if hook else {}, follow_redirects=True,
                           timeout=limit, transport=BoundedTransport())

    set_factory(factory)


class _FirstRetryOnly(logging.Filter):
    """The client logs two warnings per retry (5 retries: 10 lines before our one-line error). Show the
    first, saying that it retries; the rest only with -v (the root logger at DEBUG)."""

    MARKS = ("thrown while requesting", "Retrying in", "Rate limited. Waiting")

    def __init__(self) -> None:
        super().__init__()
        self.shown = False

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger().isEnabledFor(logging.DEBUG) or not any(m in str(record.msg) for m in self.MARKS):
            return True
        if self.shown:
            return False
        self.shown = True
        record.msg = f"{record.getMessage()} (retrying; more retry messages with -v)"
        record.args = None
        return True


def default_endpoint() -> str:
    return require_hub().constants.ENDPOINT


def with_retries(call: Callable[[], T], what: str) -> T:
    """`call()`, retried while the Hub answers 429 (rate limited: the request was not processed, so
    retrying a commit is safe), honouring Retry-After; WTOURS_HUB_RETRIES times at most. The client
    retries its uploads and downloads itself, but not commits and preuploads."""
    from huggingface_hub.errors import HfHubHTTPError

    retries = int(os.environ.get(RETRIES_ENV) or DEFAULT_RETRIES)
    wait = 1.0
    for attempt in range(retries + 1):
        try:
            return call()
        except HfHubHTTPError as e:
            response = getattr(e, "response", None)
            if response is None or getattr(response, "status_code", None) != 429 or attempt == retries:
                raise
            try:
                delay = float(response.headers.get("Retry-After", wait))
            except (TypeError, ValueError):
                delay = wait
            delay = min(max(delay, 0.0), MAX_RETRY_WAIT)
            log.warning("%s: the Hub is rate-limiting (HTTP 429); retry %d of %d in %g s", what, attempt + 1,
                        retries, delay)
            time.sleep(delay)
            wait = min(wait * 2, MAX_RETRY_WAIT)
    raise AssertionError("unreachable")  # pragma: no cover


def api(target: HubTarget):
    return require_hub().HfApi(endpoint=target.endpoint, token=target.token)


def filesystem(target: HubTarget):
    """A fresh HfFileSystem: instances are cached per process, and a cached one may hold listings
    from before our own commits."""
    return require_hub().HfFileSystem(endpoint=target.endpoint, token=target.token, skip_instance_cache=True)


def has_token(token: str | None = None) -> bool:
    return bool(token or require_hub().get_token())


def endpoint_of(target: HubTarget) -> str:
    return api(target).endpoint


def git_blob_id(data: bytes) -> str:
    """What the Hub reports as a regular file's oid (git's blob sha1)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# ---------------------------------------------------------------------- shared by the dataset and model pushes


def same_content(remote: RemoteFile | None, size: int, sha256: Callable[[], str],
                 blob_id: Callable[[], str]) -> bool:
    """Whether the repo already holds this content: same size, then the LFS sha256 where the Hub has one,
    else git's blob id (a small file stored as a regular file). The hashes are computed only if needed."""
    if remote is None or remote.size != size:
        return False
    if remote.sha256:
        return remote.sha256 == sha256()
    return remote.blob_id == blob_id()


def same_bytes(remote: RemoteFile | None, data: bytes | None) -> bool:
    """`same_content` of generated bytes (an index, a card, a config.json)."""
    if data is None:
        return False
    return same_content(remote, len(data), lambda: hashlib.sha256(data).hexdigest(), lambda: git_blob_id(data))


def check_namespace(target: HubTarget) -> None:
    """Refuse a repo outside the logged-in user's namespace and organisations, before anything is created
    (the Hub would refuse the creation with a less helpful 403, or a commit to someone's open repo)."""
    if not has_token(target.token):
        raise WtoursError(f"push to {target.repo}: not logged in", LOGIN_HINT)
    with hub_errors(f"push to {target.repo}: who am I", target, write=True):
        me = api(target).whoami()
    user = str(me.get("name") or "")
    namespaces = {user} | {str(org.get("name")) for org in me.get("orgs") or [] if isinstance(org, dict)}
    namespace = target.repo.split("/")[0]
    if namespace not in namespaces:
        mine = ", ".join(sorted(n for n in namespaces if n))
        raise UsageError(f"{target.repo}: {namespace!r} is not your namespace (you are logged in as {user!r})",
                          f"push to a repo of yours: --repo {user}/{target.repo.split('/')[1]} (yours: {mine}); "
                          "or log in as its owner (`hf auth login`)")


def prepare_repo(target: HubTarget, repo_type: str, private: bool, say: Callable[[str], None]) -> None:
    """Create the repo (private if asked) and the target's branch, if missing; an existing public repo
    stays public, with a warning."""
    hub = api(target)
    with hub_errors(f"create {target.repo}", target, write=True):
        if not hub.repo_exists(target.repo, repo_type=repo_type):
            hub.create_repo(target.repo, repo_type=repo_type, private=private, exist_ok=True)
        elif private and not hub.repo_info(target.repo, repo_type=repo_type).private:
            say(f"warning: {target.repo} already exists and is public; --private does not change that "
                "(change it in the repo's settings)")
        if target.revision != "main":
            hub.create_branch(target.repo, branch=target.revision, repo_type=repo_type, exist_ok=True)


@contextlib.contextmanager
def client_bars(enabled: bool) -> Iterator[None]:
    """huggingface_hub's own per-file progress bars on or off for the block (off: -q, or a push that draws
    its own bar), restored after."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not enabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and not was_disabled:
            enable_progress_bars()


# ---------------------------------------------------------------------- errors


def describe_error(error: BaseException, what: str, token: str | None = None, write: bool = False) -> WtoursError:
    """A Hub error as a WtoursError: repository hidden or missing, login, revision, file, network."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    access = "write" if write else "read"
    status = getattr(getattr(error, "response", None), "status_code", None)
    endpoint = _endpoint_of(error)
    if type(error).__name__ == "OfflineModeIsEnabled":
        if write:  # nothing was sent: a later run online sends it all
            return WtoursError(f"{what}: HF_HUB_OFFLINE is set, so the Hub is not contacted (nothing was sent)",
                               "unset HF_HUB_OFFLINE to upload (a rerun online sends everything); what the push "
                               "would send can be prepared offline (`wtours card` for a dataset, `wtours export` "
                               "for a model)")
        # `wtours pull` itself lands here too: the hint must not send it back to itself
        return WtoursError(f"{what}: HF_HUB_OFFLINE is set, so the Hub is not contacted",
                           "unset HF_HUB_OFFLINE to download from the Hub; offline, use shard sets already on "
                           "disk (--shards SLUG --root DIR: ones fetched earlier by `wtours pull` or `hf download`)")
    if isinstance(error, RevisionNotFoundError):
        return WtoursError(f"{what}: revision not found", "check --revision (or the @revision in the hf:// URL)")
    if isinstance(error, RepositoryNotFoundError) or status in (401, 403):
        if not has_token(token):
            return WtoursError(f"{what}: repository not found, or private and you are not logged in", LOGIN_HINT)
        if status == 401 and "Invalid credentials" in str(error):
            return WtoursError(f"{what}: the Hub refused your token (expired or revoked)", LOGIN_HINT)
        return WtoursError(f"{what}: repository not found, or your token has no {access} access to it",
                           f"check the name; {LOGIN_HINT} (the token needs {access} access)")
    if isinstance(error, EntryNotFoundError) or isinstance(error, FileNotFoundError) or status == 404:
        return WtoursError(f"{what}: no such file in the repository", "check the path and the revision")
    if status == 429:
        return WtoursError(f"{what}: the Hub at {endpoint} is rate-limiting this client (HTTP 429, after retries)",
                           "wait a few minutes, then rerun (it resumes)")
    if isinstance(error, HfHubHTTPError) and status is not None and status >= 500:
        return WtoursError(f"{what}: cannot reach the Hub at {endpoint}: it answered HTTP {status} "
                           "(after the client's retries)",
                           "the server failed; rerun later (it resumes: what was sent is not sent again)")
    if isinstance(error, HfHubHTTPError):
        return WtoursError(f"{what}: {_first_line(error)}", "check the network and rerun (it resumes)")
    if "Timeout" in type(error).__name__:
        return WtoursError(f"{what}: the Hub at {endpoint} did not answer within {request_timeout():g} s "
                           f"({type(error).__name__})",
                           f"check the network (and HF_ENDPOINT), or allow longer with {TIMEOUT_ENV}=SECONDS; "
                           "then rerun (it resumes)")
    return WtoursError(f"{what}: cannot reach the Hub at {endpoint} ({type(error).__name__}: {_first_line(error)})",
                       "check the network (and HF_ENDPOINT if you use a mirror), then rerun (it resumes)")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _endpoint_of(error: BaseException) -> str:
    """The server the failed request went to (the request's origin), else the configured endpoint."""
    request = None
    for holder in (error, getattr(error, "response", None)):
        try:
            request = getattr(holder, "request", None)
        except RuntimeError:  # httpx raises when an exception has no request attached
            request = None
        if request is not None:
            break
    url = getattr(request, "url", None)
    if url is not None and getattr(url, "host", None):
        port = f":{url.port}" if url.port else ""
        return f"{url.scheme}://{url.host}{port}"
    try:
        return default_endpoint()
    except Exception:  # noqa: BLE001 (a message only)
        return "the configured endpoint"


def is_transport_error(error: BaseException) -> bool:
    """Connection failures surface as the HTTP library's own exceptions (httpx, or requests in
    huggingface_hub < 1.0), which are not OSErrors."""
    return type(error).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "requests", "urllib3")


@contextlib.contextmanager
def hub_errors(what: str, target: HubTarget | None = None, write: bool = False) -> Iterator[None]:
    require_hub()
    from huggingface_hub.errors import HfHubHTTPError

    token = target.token if target else None
    try:
        yield
    except FileNotFoundError as e:
        if e.filename is not None:  # a local file: not the Hub's business
            raise
        # HfFileSystem reports a hidden or missing repo as FileNotFoundError raised from the Hub's error.
        raise describe_error(e.__cause__ or e, what, token, write) from e
    except HfHubHTTPError as e:
        raise describe_error(e, what, token, write) from e
    except WtoursError:  # already described (by an inner hub_errors)
        raise
    except Exception as e:
        if is_transport_error(e) or type(e).__name__ == "OfflineModeIsEnabled":
            raise describe_error(e, what, token, write) from e
        # The client wraps some failures (an LFS upload that failed after its retries is a RuntimeError
        # raised from the HTTP error): describe the Hub's error underneath.
        cause = e.__cause__
        while cause is not None and not (isinstance(cause, HfHubHTTPError) or is_transport_error(cause)):
            cause = cause.__cause__
        if cause is not None:
            raise describe_error(cause, what, token, write) from e
        raise


# ---------------------------------------------------------------------- reading


def remote_files(target: HubTarget, folder: str | None = None, recursive: bool = True,
                 repo_type: str = REPO_TYPE) -> dict[str, RemoteFile]:
    """The files under `folder` (the whole repo when None) at the target's revision; {} when absent."""
    from huggingface_hub.errors import EntryNotFoundError

    hub = api(target)
    files: dict[str, RemoteFile] = {}
    with hub_errors(f"{target.repo}@{target.revision}", target):
        try:
            for item in hub.list_repo_tree(target.repo, path_in_repo=folder, recursive=recursive,
                                           revision=target.revision, repo_type=repo_type):
                if hasattr(item, "blob_id"):  # RepoFile (RepoFolder has tree_id)
                    files[item.path] = RemoteFile(item.path, item.size, item.blob_id, _lfs_sha256(item.lfs))
        except EntryNotFoundError:
            return {}
    return files


def _lfs_sha256(lfs: Any) -> str | None:
    """BlobLfsInfo is a dict with attributes in huggingface_hub 0.x and 1.x+: read either."""
    if not lfs:
        return None
    return lfs.get("sha256") if isinstance(lfs, dict) and "sha256" in lfs else getattr(lfs, "sha256", None)


def read_remote(target: HubTarget, path: str) -> bytes:
    with hub_errors(f"{target.repo}/{path}", target):
        with filesystem(target).open(hf_url(target.repo, path, target.revision), "rb", block_size=0) as f:
            return f.read()


def open_remote(target: HubTarget, path: str, block_size: int) -> Any:
    """A seekable file that reads `block_size` byte ranges (each one GET, retried by the client)."""
    with hub_errors(f"{target.repo}/{path}", target):
        return filesystem(target).open(hf_url(target.repo, path, target.revision), "rb", block_size=block_size,
                                       cache_type="none")


def read_source_record(target: HubTarget, slug: str) -> dict[str, Any]:
    """<slug>/source.json of the repo, checked to be a JSON object (it feeds the card and `pull`)."""
    where = f"{target.repo}/{source_path(slug)}"
    try:
        record = json.loads(read_remote(target, source_path(slug)))
    except (ValueError, UnicodeDecodeError) as e:
        raise WtoursError(f"{where} is not valid JSON ({e})",
                          f"re-push the set from a data root that has it: `wtours push --city {slug} --repo "
                          f"{target.repo}`") from e
    if not isinstance(record, dict) or not isinstance(record.get("source") or {}, dict):
        raise WtoursError(f"{where} is not a provenance record (a JSON object with 'source')",
                          f"re-push the set: `wtours push --city {slug} --repo {target.repo}`")
    return record
