"""The huggingface_hub client, set up through its public API only: imported with a clear error when missing,
its settings from the environment checked first, every request bounded by WTOURS_HUB_TIMEOUT (huggingface_hub's
own HF_HUB_DOWNLOAD_TIMEOUT and HF_HUB_ETAG_TIMEOUT, 10 s by default, do not apply) and retried by
one policy (WTOURS_HUB_RETRIES, bounded backoff honouring Retry-After, said in one line), and its exceptions
turned into WtoursErrors a user can act on (the token is never shown). A leaf module: streams (hf:// reads)
and the publishing layer (wtours.hub) both use it."""

from __future__ import annotations

import contextlib
import email.utils
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

from wtours.errors import UsageError, WtoursError
from wtours.redact import redact

TIMEOUT_ENV = "WTOURS_HUB_TIMEOUT"  # seconds without an answer before a Hub request fails
DEFAULT_TIMEOUT = 60.0
MAX_TIMEOUT = 86400.0
RETRIES_ENV = "WTOURS_HUB_RETRIES"  # retries of each Hub request that failed in a way worth retrying
DEFAULT_RETRIES = 5
MAX_RETRIES = 100
MAX_BACKOFF = 8.0  # seconds between retries: 1, 2, 4, 8, 8, ... unless the server says (Retry-After)
MAX_WAIT = 60.0  # seconds before a retry at most, whatever Retry-After says
# The phase of a request each of httpx's timeouts is for (its `timeout` extension's keys).
TIMEOUT_PHASES = {"ConnectTimeout": "connect", "ReadTimeout": "read", "WriteTimeout": "write", "PoolTimeout": "pool"}
# The answers a request is retried on (besides connection failures and timeouts): a timeout, rate limiting,
# a server failure. A commit is retried only where it surely was not applied: on 429, or when never sent.
RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
HUB_AGENT = "hf_hub/"  # in the user agent of each request huggingface_hub sends to the Hub
COMMIT = re.compile(r"/api/(?:models|datasets|spaces)/[^/]+/[^/]+/commit/")

# huggingface_hub sends LFS files through hf_xet (its own client, not the HTTP client set up here) whenever
# hf_xet is installed; a server without Xet (a mirror, a local test Hub) needs this set to "1".
DISABLE_XET_ENV = "HF_HUB_DISABLE_XET"
XET_HINT = (f"the server did not accept a Xet transfer: against a Hub server without Xet (a mirror, a local test "
            f"Hub) set {DISABLE_XET_ENV}=1 to send LFS files over plain HTTP; then rerun (it resumes)")

LOGIN_HINT = ("log in with `hf auth login` (`huggingface-cli login` in older huggingface_hub) or set HF_TOKEN; "
              "create a token at https://huggingface.co/settings/tokens")

retry_log = logging.getLogger(f"{__name__}.retries")  # one line when the first request is retried
log = logging.getLogger(__name__)  # each retry, with -v


class HasToken(Protocol):
    """What error reporting needs of a Hub target (wtours.hub.client.HubTarget): its token, if any."""

    @property
    def token(self) -> str | None: ...


@dataclass(frozen=True)
class HubSettings:
    retries: int
    timeout: float


def hub_settings() -> HubSettings:
    """WTOURS_HUB_RETRIES and WTOURS_HUB_TIMEOUT, checked like options: a UsageError naming the variable and
    what it allows. `require_hub` checks them before the first request, so before anything is created."""
    return HubSettings(
        _env_number(RETRIES_ENV, int, DEFAULT_RETRIES, lambda v: 0 <= v <= MAX_RETRIES,
                    f"a whole number of retries from 0 to {MAX_RETRIES}"),
        _env_number(TIMEOUT_ENV, float, DEFAULT_TIMEOUT, lambda v: 0 < v <= MAX_TIMEOUT,
                    f"a number of seconds above 0 and at most {MAX_TIMEOUT:g}"))


def _env_number(name: str, kind: Callable[[str], Any], default: Any, fits: Callable[[Any], bool], allowed: str) -> Any:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not fits(value):
        raise UsageError(f"the environment variable {name}={text!r} is not {allowed}",
                         f"set {name} to {allowed}, or unset it (default {default:g})")
    return value


def require_hub() -> Any:
    """The huggingface_hub module, its HTTP client set up for wtours (once per process); the settings
    from the environment checked first."""
    hub_settings()
    try:
        import huggingface_hub
    except ImportError as e:
        raise WtoursError("the Hub commands need huggingface_hub", "pip install 'wtours[hub]'") from e
    _set_up_once(huggingface_hub)
    return huggingface_hub


def request_timeout() -> float:
    """Seconds a Hub request may go without an answer (connect, each read, each write): WTOURS_HUB_TIMEOUT,
    for every request huggingface_hub sends, downloads and streamed reads included."""
    return float(hub_settings().timeout)


def retry_delay(retry_after: str | None, attempt: int) -> float:
    """Seconds before retry number `attempt` + 1: the server's Retry-After (seconds or an HTTP date) where
    it is a sane value, else 1, 2, 4, 8, 8, ... s; never more than MAX_WAIT (a NaN, negative or huge value
    neither crashes nor hangs)."""
    delay = min(2.0 ** attempt, MAX_BACKOFF)
    with contextlib.suppress(TypeError, ValueError, OverflowError, IndexError):
        text = (retry_after or "").strip()
        date = None if text[:1].isdigit() else email.utils.parsedate_to_datetime(text)
        seconds = float(text) if date is None else date.timestamp() - time.time()
        if math.isfinite(seconds):
            delay = max(seconds, 0.0)
    return min(delay, MAX_WAIT)


class RetriesExhausted(Exception):
    """A Hub request that failed on each of its `tries` (the last answer's `status`, or no answer: `error`)."""

    def __init__(self, request: Any, tries: int, waited: float, status: int | None, error: BaseException | None):
        self.request, self.tries, self.waited, self.status, self.error = request, tries, waited, status, error
        last = f"HTTP {status}" if status else f"{type(error).__name__}: {_first_line(error)}" if error else "?"
        super().__init__(f"{request.method} {redact(str(request.url))}: {last} on all {tries} tries")

    def tried(self) -> str:
        tries = "its only try" if self.tries == 1 else f"all {self.tries} tries over {self.waited:.0f} s"
        return f" on {tries} ({RETRIES_ENV}={self.tries - 1})"


_set_up = False
_set_up_lock = threading.Lock()


def _set_up_once(huggingface_hub: ModuleType) -> None:
    """huggingface_hub prints through its own handler and propagates too (where the application has configured
    logging, the CLI, every warning came out twice): its messages are printed once, by its handler, and only
    with -v (the root logger at DEBUG). Its HTTP client has no timeout (and many API calls pass `timeout=None`),
    so a server that stops answering would hang push and pull forever, while downloads and range reads pass
    its own HF_HUB_DOWNLOAD_TIMEOUT (10 s), which a slow mirror exceeds whatever WTOURS_HUB_TIMEOUT says; and
    it retries only some calls (not whoami, repo_info, create_repo, preupload or commits), each its own way:
    its public client factory is replaced by one whose transport bounds every request it sends by
    `request_timeout()` (connect, read, write and pool: one limit, the one the error names) and retries every
    request by one policy, so the
    library's own backoff never sees a failure worth retrying; the library's request hooks (offline mode,
    request ids) are taken from the client it would have made."""
    global _set_up
    from huggingface_hub import utils
    from huggingface_hub.utils import logging as hub_logging

    with _set_up_lock:
        if _set_up:
            return
        _set_up = True
        root = logging.getLogger()
        if root.handlers:
            hub_logging.disable_propagation()
        if not root.isEnabledFor(logging.DEBUG):
            hub_logging.set_verbosity_error()
        retry_log.setLevel(logging.WARNING)  # shown under -q too: it explains a wait of minutes
        http: Any = utils.httpx  # httpx2 in 2.x, httpx in 1.x: the public alias (since 1.30) for either
        hooks = {name: list(chain) for name, chain in huggingface_hub.get_session().event_hooks.items()}
        limit = request_timeout()
        said = threading.Event()
        unsent = (http.ConnectError, http.ConnectTimeout, http.PoolTimeout)  # the request never left
        transient = (http.TimeoutException, http.NetworkError, http.RemoteProtocolError)

        class RetryingTransport(http.HTTPTransport):
            """httpx's transport (its public HTTPTransport, extended): a request's timeouts become `limit` (a side
            request's only where it set none), and a request that failed in a way worth retrying is retried
            WTOURS_HUB_RETRIES times (retry_delay); the first retry of the process is said in one line, each one
            with -v. These go once: a request whose body is a stream (an LFS upload from a file: huggingface_hub
            retries it itself, rewinding the file; the wait it reads is made ours, at most MAX_WAIT), and the
            library's best-effort side requests, sent without its user agent (the registry of AI agents it
            fetches to build that user agent, which a machine offline must not wait for)."""

            def handle_request(self, request: Any) -> Any:
                agent = request.headers.get("user-agent", "")
                timeout = dict(request.extensions.get("timeout") or {})
                timeout.update({key: limit for key in TIMEOUT_PHASES.values()
                                if timeout.get(key) is None or HUB_AGENT in agent})
                request.extensions = {**request.extensions, "timeout": timeout}
                if not isinstance(request.stream, http.ByteStream) or HUB_AGENT not in agent:
                    response = super().handle_request(request)
                    if response.status_code in RETRIED_STATUSES:  # where huggingface_hub retries: a wait of ours
                        response.headers["Retry-After"] = f"{retry_delay(response.headers.get('Retry-After'), 0):.0f}"
                        response.headers.pop("RateLimit", None)  # (it would wait its reset time, unbounded)
                    return response
                retries = hub_settings().retries
                commit = request.method == "POST" and COMMIT.search(request.url.path) is not None
                retried = unsent if commit else transient
                waited = 0.0
                for attempt in range(retries + 1):
                    status, error, retry_after = None, None, None
                    try:
                        response = super().handle_request(request)
                    except retried as e:
                        error, failure = e, f"no answer ({type(e).__name__}: {_first_line(e)})"
                    else:
                        status = response.status_code
                        if status not in RETRIED_STATUSES or (commit and status != 429):
                            return response
                        retry_after, failure = response.headers.get("Retry-After"), f"HTTP {status}"
                        response.close()
                    if attempt == retries:
                        raise RetriesExhausted(request, attempt + 1, waited, status, error) from error
                    delay = retry_delay(retry_after, attempt)
                    if not said.is_set():
                        said.set()
                        retry_log.warning("the Hub: %s %s: %s; retrying (up to %d times, each retry shown with -v)",
                                          request.method, redact(str(request.url)), failure, retries)
                    log.debug("%s %s: %s; retry %d of %d in %g s", request.method, redact(str(request.url)),
                              failure, attempt + 1, retries, delay)
                    time.sleep(delay)
                    waited += delay
                raise AssertionError("unreachable")  # pragma: no cover

        def factory() -> Any:
            return http.Client(event_hooks=hooks, follow_redirects=True, timeout=limit, transport=RetryingTransport())

        huggingface_hub.set_client_factory(factory)


def default_endpoint() -> str:
    return str(require_hub().constants.ENDPOINT)


def has_token(token: str | None = None) -> bool:
    return bool(token or require_hub().get_token())


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
    tried = error.tried() if isinstance(error, RetriesExhausted) else ""
    request = error.request if isinstance(error, RetriesExhausted) else _request_of(error)
    status = getattr(getattr(error, "response", None), "status_code", None) or getattr(error, "status", None)
    endpoint = _endpoint_of(error)
    if isinstance(error, RetriesExhausted) and error.error is not None:
        error = error.error  # no answer: described below, as a timeout or a connection failure
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
        # the Hub's answer to a bad token ("Invalid credentials ..."), and huggingface_hub's to whoami's 401
        if status == 401 and any(m in str(error) for m in ("Invalid credentials", "Invalid user token")):
            return WtoursError(f"{what}: the Hub refused your token (invalid, expired or revoked)", LOGIN_HINT)
        if status == 403:
            return WtoursError(f"{what}: the Hub refused your token {access} access (HTTP 403)",
                               f"check the name; {LOGIN_HINT} (the token needs {access} access)")
        return WtoursError(f"{what}: repository not found, or your token has no {access} access to it",
                           f"check the name; {LOGIN_HINT} (the token needs {access} access)")
    if isinstance(error, (EntryNotFoundError, FileNotFoundError)) or status == 404:
        return WtoursError(f"{what}: no such file in the repository", "check the path and the revision")
    if status == 429:
        return WtoursError(f"{what}: the Hub at {endpoint} is rate-limiting this client: HTTP 429{tried}",
                           f"wait a few minutes, then rerun (it resumes); {RETRIES_ENV}=N retries each request N "
                           f"times (default {DEFAULT_RETRIES})")
    if status is not None and status >= 500:
        how = tried or (" to a commit, which is not retried: it may have been applied (a rerun checks)"
                        if _is_commit(error) else " (after huggingface_hub's retries of the upload)")
        return WtoursError(f"{what}: cannot reach the Hub at {endpoint}: it answered HTTP {status}{how}",
                           "the server failed; rerun later (it resumes: what was sent is not sent again)")
    if isinstance(error, HfHubHTTPError):
        return WtoursError(f"{what}: {_first_line(error)}", "check the network and rerun (it resumes)")
    if _is_xet_error(error):
        return WtoursError(f"{what}: the Xet transfer with {endpoint} failed ({redact(_first_line(error))})", XET_HINT)
    if "Timeout" in type(error).__name__:
        return WtoursError(f"{what}: the Hub at {endpoint} did not answer within "
                           f"{_limit_that_fired(error, request)}){tried}",
                           f"check the network (and HF_ENDPOINT), or allow longer with {TIMEOUT_ENV}=SECONDS; "
                           "then rerun (it resumes)")
    return WtoursError(f"{what}: cannot reach the Hub at {endpoint} ({type(error).__name__}: {_first_line(error)})"
                       f"{tried}", "check the network (and HF_ENDPOINT if you use a mirror), then rerun (it resumes)")


def _limit_that_fired(error: BaseException, request: Any) -> str:
    """The timeout that `error` (httpx's ConnectTimeout, ReadTimeout, ...) ran out, as the request carried it:
    `N s (ReadTimeout, the limit WTOURS_HUB_TIMEOUT=N`, or the caller's own limit where the transport left it
    (a side request); the closing parenthesis is the caller's."""
    ours, kind = request_timeout(), type(error).__name__
    timeout = getattr(request, "extensions", {}).get("timeout") or {}
    limit = timeout.get(TIMEOUT_PHASES.get(kind, "read"))
    if not isinstance(limit, (int, float)) or limit == ours:
        return f"{ours:g} s ({kind}, the limit {TIMEOUT_ENV}={ours:g}"
    return f"{limit:g} s ({kind}, huggingface_hub's own limit for this request"


def _is_xet_error(error: BaseException) -> bool:
    """hf_xet's failures reach Python as the builtin ConnectionError (or RuntimeError) whose text names the Xet
    route that failed (`.../xet-write-token/...`, `.../xet-read-token/...`)."""
    return isinstance(error, (ConnectionError, RuntimeError)) and "xet-" in str(error).lower()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _request_of(error: BaseException) -> Any:
    for holder in (error, getattr(error, "response", None)):
        with contextlib.suppress(RuntimeError):  # httpx raises when an exception has no request attached
            request = getattr(holder, "request", None)
            if request is not None:
                return request
    return None


def _is_commit(error: BaseException) -> bool:
    request = _request_of(error)
    return request is not None and COMMIT.search(str(request.url)) is not None


def _endpoint_of(error: BaseException) -> str:
    """The server the failed request went to (the request's origin), else the configured endpoint."""
    url = getattr(_request_of(error), "url", None)
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


def is_hub_error(error: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError

    return isinstance(error, (HfHubHTTPError, RetriesExhausted)) or is_transport_error(error)


@contextlib.contextmanager
def hub_errors(what: str, target: HasToken | None = None, write: bool = False) -> Iterator[None]:
    """Hub failures inside the block as one WtoursError naming `what` (`target`'s token decides the login hint)."""
    require_hub()
    token = target.token if target else None
    try:
        yield
    except FileNotFoundError as e:
        if e.filename is not None:  # a local file: not the Hub's business
            raise
        # HfFileSystem reports a hidden or missing repo as FileNotFoundError raised from the Hub's error.
        raise describe_error(e.__cause__ or e, what, token, write) from e
    except WtoursError:  # already described (by an inner hub_errors)
        raise
    except Exception as e:
        if is_hub_error(e) or _is_xet_error(e) or type(e).__name__ == "OfflineModeIsEnabled":
            raise describe_error(e, what, token, write) from e
        # The client wraps some failures (an LFS upload that failed after its retries is a RuntimeError
        # raised from the HTTP error): describe the Hub's error underneath.
        cause = e.__cause__
        while cause is not None and not is_hub_error(cause):
            cause = cause.__cause__
        if cause is None:
            raise
        raise describe_error(cause, what, token, write) from e
