"""The huggingface_hub client: which repo and endpoint, the login, listing and reading files, and the
Hub's errors turned into messages a user can act on (the token is never shown)."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterator

from wtours.errors import WtoursError
from wtours.hub.paths import DEFAULT_REVISION, REPO_TYPE, hf_url, validate_repo_id

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
    return huggingface_hub


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


# ---------------------------------------------------------------------- errors


def describe_error(error: BaseException, what: str, token: str | None = None, write: bool = False) -> WtoursError:
    """A Hub error as a WtoursError: repository hidden or missing, login, revision, file, network."""
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    access = "write" if write else "read"
    status = getattr(getattr(error, "response", None), "status_code", None)
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
    if isinstance(error, HfHubHTTPError):
        return WtoursError(f"{what}: {str(error).strip().splitlines()[0]}", "check the network and rerun (it resumes)")
    return WtoursError(f"{what}: cannot reach the Hub ({type(error).__name__}: {error})",
                       "check the network (and HF_ENDPOINT if you use a mirror), then rerun (it resumes)")


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
    except Exception as e:
        if is_transport_error(e):
            raise describe_error(e, what, token, write) from e
        raise


# ---------------------------------------------------------------------- reading


def remote_files(target: HubTarget, folder: str | None = None, recursive: bool = True) -> dict[str, RemoteFile]:
    """The files under `folder` (the whole repo when None) at the target's revision; {} when absent."""
    from huggingface_hub.errors import EntryNotFoundError

    hub = api(target)
    files: dict[str, RemoteFile] = {}
    with hub_errors(f"{target.repo}@{target.revision}", target):
        try:
            for item in hub.list_repo_tree(target.repo, path_in_repo=folder, recursive=recursive,
                                           revision=target.revision, repo_type=REPO_TYPE):
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
