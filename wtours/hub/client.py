"""The huggingface_hub client: which repo and endpoint, the login, listing and reading files, and the
Hub's errors turned into messages a user can act on (the token is never shown)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from wtours.errors import UsageError, WtoursError
from wtours.hfclient import LOGIN_HINT, has_token, hub_errors, require_hub
from wtours.hub.paths import REPO_TYPE, source_path
from wtours.streams import DEFAULT_REVISION, hf_url, validate_repo_id, validate_revision

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class HubTarget:
    """A Hub repo (a dataset's, or a model's for `push --model`) at a revision. `endpoint` and `token` default
    to huggingface_hub's own settings (HF_ENDPOINT, and the token of `hf auth login` or HF_TOKEN)."""

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


def api(target: HubTarget):
    return require_hub().HfApi(endpoint=target.endpoint, token=target.token)


def filesystem(target: HubTarget):
    """A fresh HfFileSystem: instances are cached per process, and a cached one may hold listings
    from before our own commits."""
    return require_hub().HfFileSystem(endpoint=target.endpoint, token=target.token, skip_instance_cache=True)


def git_blob_id(data: bytes) -> str:
    """What the Hub reports as a regular file's oid (git's blob sha1)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# ---------------------------------------------------------------------- shared by the dataset and model pushes


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


def prepare_repo(target: HubTarget, repo_type: str, private: bool, dry_run: bool, say: Callable[[str], None]) -> None:
    """Check the namespace (a dry run without a login just reads) and, unless a dry run, create the repo
    (private if asked) and the target's branch if missing; an existing public repo stays public, warned."""
    if not dry_run or has_token(target.token):
        check_namespace(target)
    if dry_run:
        return
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


def remote_files(target: HubTarget, repo_type: str = REPO_TYPE, missing_ok: bool = False) -> dict[str, RemoteFile]:
    """The repo's files at the target's revision; {} when absent, and with `missing_ok` for a repo or branch
    that does not exist yet."""
    from huggingface_hub.errors import EntryNotFoundError

    hub = api(target)
    files: dict[str, RemoteFile] = {}
    with hub_errors(f"{target.repo}@{target.revision}", target):
        if missing_ok and not (hub.repo_exists(target.repo, repo_type=repo_type)
                               and hub.revision_exists(target.repo, target.revision, repo_type=repo_type)):
            return {}
        try:
            for item in hub.list_repo_tree(target.repo, path_in_repo=None, recursive=True,
                                           revision=target.revision, repo_type=repo_type):
                if hasattr(item, "blob_id"):  # RepoFile (RepoFolder has tree_id)
                    sha256 = item.lfs.sha256 if item.lfs else None  # BlobLfsInfo, made from the listing's "oid"
                    files[item.path] = RemoteFile(item.path, item.size, item.blob_id, sha256)
        except EntryNotFoundError:
            return {}
    return files


def read_remote(target: HubTarget, path: str, repo_type: str = REPO_TYPE) -> bytes:
    with hub_errors(f"{target.repo}/{path}", target):
        with filesystem(target).open(hf_url(target.repo, path, target.revision, repo_type), "rb", block_size=0) as f:
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

