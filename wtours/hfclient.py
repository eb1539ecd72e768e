"""The huggingface_hub client, set up through its public API only: imported with a clear error when missing,
every request bounded by WTOURS_HUB_TIMEOUT, its retry chatter cut to one line, and its exceptions turned
into WtoursErrors a user can act on (the token is never shown). A leaf module: streams (hf:// reads) and
the publishing layer (wtours.hub) both use it."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any, Protocol

from wtours.errors import WtoursError
from wtours.redact import redact

TIMEOUT_ENV = "WTOURS_HUB_TIMEOUT"  # seconds without an answer before a Hub request fails
DEFAULT_TIMEOUT = 60.0
# huggingface_hub's own limits for downloads and metadata requests (read when it is imported): set from
# WTOURS_HUB_TIMEOUT when the user sets that and not these.
HUB_TIMEOUT_ENVS = ("HF_HUB_DOWNLOAD_TIMEOUT", "HF_HUB_ETAG_TIMEOUT")
# The answers huggingface_hub's backoff retries (besides connection failures and timeouts).
RETRIED_STATUSES = frozenset({408, 500, 502, 503, 504})

LOGIN_HINT = ("log in with `hf auth login` (`huggingface-cli login` in older huggingface_hub) or set HF_TOKEN; "
              "create a token at https://huggingface.co/settings/tokens")

retry_log = logging.getLogger(f"{__name__}.retries")  # one line when the client starts retrying


class HasToken(Protocol):
    """What error reporting needs of a Hub target (wtours.hub.client.HubTarget): its token, if any."""

    @property
    def token(self) -> str | None: ...


def require_hub() -> Any:
    """The huggingface_hub module, its HTTP client set up for wtours (once per process)."""
    _timeouts_from_env()
    try:
        import huggingface_hub
    except ImportError as e:
        raise WtoursError("the Hub commands need huggingface_hub", "pip install 'wtours[hub]'") from e
    _set_up_once(huggingface_hub)
    return huggingface_hub


def request_timeout() -> float:
    """Seconds a Hub request may go without an answer (connect, each read, each write): WTOURS_HUB_TIMEOUT."""
    try:
        value = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT)
    except ValueError as e:
        raise WtoursError(f"{TIMEOUT_ENV}={os.environ.get(TIMEOUT_ENV)!r} is not a number of seconds",
                          f"e.g. {TIMEOUT_ENV}=60") from e
    return value if value > 0 else DEFAULT_TIMEOUT


def _timeouts_from_env() -> None:
    """WTOURS_HUB_TIMEOUT also bounds huggingface_hub's own download and metadata limits (whole seconds),
    unless the user set those; it reads them when imported, so this runs before the import."""
    if not os.environ.get(TIMEOUT_ENV):
        return
    seconds = str(max(1, math.ceil(request_timeout())))
    for name in HUB_TIMEOUT_ENVS:
        os.environ.setdefault(name, seconds)


_set_up = False
_set_up_lock = threading.Lock()


def _set_up_once(huggingface_hub: ModuleType) -> None:
    """huggingface_hub prints through its own handler and propagates too (where the application has configured
    logging, the CLI, every warning came out twice), and logs two warnings per retry (ten lines before our
    one-line error): its messages are printed once, by its handler, and only with -v (the root logger at DEBUG);
    its transport says once that a request is being retried. Its HTTP client has no timeout (and many API
    calls pass `timeout=None`), so a server that stops answering would hang push and pull forever: its public
    client factory is replaced by one whose client bounds every request of this process by `request_timeout()`
    for whatever the caller left unbounded (its own, smaller limits stay), with the library's own request hooks
    (offline mode, request ids) taken from the client it would have made."""
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

        def say_retrying(request: Any, what: str) -> None:
            if not said.is_set():
                said.set()
                retry_log.warning("the Hub: %s %s: %s; huggingface_hub retries (more retry messages with -v)",
                                  request.method, redact(str(request.url)), what)

        class BoundedTransport(http.HTTPTransport):
            """httpx's transport (its public HTTPTransport, extended): a request's unset timeouts (`None`) become
            `limit`, and the first failure the client will retry is said once (the library's own retry messages
            are shown with -v only)."""

            def handle_request(self, request: Any) -> Any:
                timeout = dict(request.extensions.get("timeout") or {})
                timeout.update({key: limit for key in ("connect", "read", "write", "pool") if timeout.get(key) is None})
                request.extensions = {**request.extensions, "timeout": timeout}
                try:
                    response = super().handle_request(request)
                except http.TransportError as e:
                    say_retrying(request, f"no answer ({type(e).__name__}: {_first_line(e)})")
                    raise
                if response.status_code in RETRIED_STATUSES:
                    say_retrying(request, f"HTTP {response.status_code}")
                return response

        def factory() -> Any:
            return http.Client(event_hooks=hooks, follow_redirects=True, timeout=limit, transport=BoundedTransport())

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
    if isinstance(error, (EntryNotFoundError, FileNotFoundError)) or status == 404:
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
        with contextlib.suppress(RuntimeError):  # httpx raises when an exception has no request attached
            request = getattr(holder, "request", None)
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
def hub_errors(what: str, target: HasToken | None = None, write: bool = False) -> Iterator[None]:
    """Hub failures inside the block as one WtoursError naming `what` (`target`'s token decides the login hint)."""
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
    except WtoursError:  # already described (by an inner hub_errors)
        raise
    except Exception as e:
        if isinstance(e, HfHubHTTPError) or is_transport_error(e) or type(e).__name__ == "OfflineModeIsEnabled":
            raise describe_error(e, what, token, write) from e
        # The client wraps some failures (an LFS upload that failed after its retries is a RuntimeError
        # raised from the HTTP error): describe the Hub's error underneath.
        cause = e.__cause__
        while cause is not None and not (isinstance(cause, HfHubHTTPError) or is_transport_error(cause)):
            cause = cause.__cause__
        if cause is None:
            raise
        raise describe_error(cause, what, token, write) from e
