"""`wtours push`: upload shard sets, their index, wids descriptor and provenance, and the dataset card
to a Hub dataset repo. Resumable by comparison, not by local state: what the repo already holds with
the index's sha256 (LFS files) or git blob id (regular files) is skipped, so a rerun uploads only what
is missing or changed. Files go up in commits of at most `max_commit_files` files / `max_commit_bytes`
bytes, each set's index.json (and wids descriptor) in the commit with (or after) its last shard: the
repo never has an index naming a shard it lacks, and when shards are replaced the old index is removed
first. The plan (plan_set, batch_operations) is made without the network."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from wtours.errors import WtoursError
from wtours.hfclient import hub_errors
from wtours.hub.card import CardVideo, is_generated, render_card
from wtours.hub.client import (
    HubTarget,
    RemoteFile,
    api,
    client_bars,
    git_blob_id,
    prepare_repo,
    read_remote,
    read_source_record,
    remote_files,
)
from wtours.hub.paths import (
    CARD_FILE,
    REPO_TYPE,
    index_path,
    is_shard_path,
    shard_path,
    slugs_in,
    source_path,
    wids_path,
)
from wtours.hub.source import LocalSet, is_corpus_city_walk, read_local_set
from wtours.layout import Layout, json_bytes, sha256_file
from wtours.locks import reading
from wtours.shard.index import ShardEntry, ShardIndex

MAX_COMMIT_FILES = 50  # the Hub recommends under 100 files per commit
MAX_COMMIT_BYTES = 10 << 30  # LFS bodies are stored before their commit; this bounds what a failed commit leaves


@dataclass(frozen=True)
class PushConfig:
    target: HubTarget
    slugs: tuple[str, ...]
    private: bool = False
    max_commit_files: int = MAX_COMMIT_FILES
    max_commit_bytes: int = MAX_COMMIT_BYTES
    dry_run: bool = False
    progress: bool = True


@dataclass(frozen=True)
class Upload:
    path: str  # in the repo
    size: int
    local: Path | None = None  # a file on disk: a shard, a model's weights
    data: bytes | None = None  # generated content: index, source record, card, config.json
    sha256: str | None = None  # a shard's in the index, checked against what the client hashed before committing

    def content(self) -> str | bytes:
        """As CommitOperationAdd takes it: the file's path, or the bytes."""
        return str(self.local) if self.local is not None else self.data or b""

    def is_in(self, remote: dict[str, RemoteFile]) -> bool:
        """Whether the repo already holds this content: same size, then the LFS sha256 where the Hub has one
        (a shard's is its index's, checked again when it is uploaded: _check_checksum), else git's blob id
        (a small file stored as a regular file). The content is hashed only if needed."""
        theirs, data, local = remote.get(self.path), self.data, self.local or Path()
        if theirs is None or theirs.size != self.size:
            return False
        if theirs.sha256:
            ours = self.sha256 or (hashlib.sha256(data).hexdigest() if data is not None else sha256_file(local))
            return theirs.sha256 == ours
        return theirs.blob_id == git_blob_id(data if data is not None else local.read_bytes())


@dataclass(frozen=True)
class Delete:
    path: str
    size: int = 0


Operation = Upload | Delete


@dataclass
class PushSummary:
    repo_url: str
    uploaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    bytes: int = 0
    commits: int = 0

    def line(self, repo: str) -> str:
        if not self.uploaded and not self.deleted:
            return f"{repo}: up to date, nothing to upload ({self.repo_url})"
        deleted = f", {len(self.deleted)} deleted" if self.deleted else ""
        return (f"pushed {len(self.uploaded)} files ({self.bytes / 1e6:.1f} MB){deleted} in {self.commits} "
                f"commit{'s' if self.commits != 1 else ''}: {self.repo_url}")


def set_metadata(local: LocalSet) -> list[tuple[str, bytes]]:
    """A set's files besides its shards, in commit order: its provenance, its wids descriptor (made from
    the index, so byte-identical to the local one) and, last, its index."""
    return [(source_path(local.slug), json_bytes(local.record)),  # canonical: an unchanged one is not sent again
            (wids_path(local.slug), json_bytes(local.index.wids_descriptor())),
            (index_path(local.slug), local.index_bytes)]


def plan_set(slug: str, shards: Sequence[ShardEntry], shard_dir: Path, metadata: list[tuple[str, bytes]],
             remote: dict[str, RemoteFile]) -> list[Operation]:
    """What to send for one shard set, in order: [old index and wids removal], shards, stale shard
    removals, then `metadata` (source.json, the wids descriptor, index.json). Empty when the repo
    already holds exactly these files."""
    shard_ops = [Upload(shard_path(slug, s.name), s.bytes, local=shard_dir / s.name, sha256=s.sha256) for s in shards]
    uploads = [op for op in shard_ops if not op.is_in(remote)]
    listed = {op.path for op in shard_ops}
    stale = [Delete(p) for p in sorted(remote) if is_shard_path(p, slug) and p not in listed]
    meta = [Upload(path, len(data), data=data) for path, data in metadata]
    unchanged = {op.path for op in meta if op.is_in(remote)}
    if not uploads and not stale and len(unchanged) == len(meta):
        return []
    # An index (or wids descriptor) must never describe shards other than the ones beside it: when shards
    # already in the repo are replaced or removed, the old ones go in the first commit and come back with
    # the last.
    replaces = bool(stale) or any(op.path in remote for op in uploads)
    retired = [p for p in (index_path(slug), wids_path(slug)) if replaces and p in remote]
    meta = [op for op in meta if op.path not in unchanged or op.path in retired]
    return [Delete(p) for p in retired] + uploads + stale + meta


def batch_operations(operations: list[Operation], max_files: int, max_bytes: int) -> list[list[Operation]]:
    """Consecutive runs of operations within the limits (a file larger than max_bytes goes alone); order
    is kept, so an index is never committed before its shards. A delete and a re-upload of the same
    path in one commit are just the upload."""
    batches: list[list[Operation]] = []
    for op in operations:
        if not batches or len(batches[-1]) >= max_files or sum(o.size for o in batches[-1]) + op.size > max_bytes:
            batches.append([])
        batches[-1].append(op)
    for i, ops in enumerate(batches):
        uploaded = {op.path for op in ops if isinstance(op, Upload)}
        batches[i] = [op for op in ops if not (isinstance(op, Delete) and op.path in uploaded)]
    return batches


def push(layout: Layout, config: PushConfig, say: Callable[[str], None] = print) -> PushSummary:
    """Upload the sets, each held as its reader meanwhile (no run replaces or repairs a set being pushed)."""
    with reading(layout.shard_dir(slug) for slug in config.slugs):
        return _push(layout, config, say)


def _push(layout: Layout, config: PushConfig, say: Callable[[str], None]) -> PushSummary:
    target = config.target
    sets = {slug: read_local_set(layout, slug) for slug in config.slugs}
    prepare_repo(target, REPO_TYPE, config.private, config.dry_run, say)
    remote, current = _remote_state(target, config.dry_run)
    operations: list[Operation] = []
    for slug, local in sets.items():
        ops = plan_set(slug, local.index.shards, layout.shard_dir(slug), set_metadata(local),
                       {p: f for p, f in remote.items() if p.startswith(slug + "/")})
        say(_describe_plan(slug, len(local.index.shards), ops))
        if local.index.privacy is None and is_corpus_city_walk(local.record):  # not own footage, nor the wildlife walk
            say(f"warning: {slug}: faces are not blurred in these shards of a city walk full of people; consider "
                f"`wtours blur-faces {slug} --out DIR` or `wtours shard --city {slug} --blur-faces --overwrite`")
        operations += ops
    operations += _card_operation(target, current, sets, remote, say)
    summary = PushSummary(f"{api(target).endpoint}/datasets/{target.repo}")
    if config.dry_run or not operations:
        return summary
    batches = batch_operations(operations, config.max_commit_files, config.max_commit_bytes)
    with hub_errors(f"push to {target.repo}", target, write=True):
        _commit_batches(target, batches, config.progress, summary)
    return summary


def _remote_state(target: HubTarget, dry_run: bool) -> tuple[dict[str, RemoteFile], HubTarget]:
    """The repo's files, and the target to read them from: in a dry run a branch not yet created is
    read from main, which it would be created from."""
    if dry_run:  # nothing created: a missing repo or branch is simply empty
        hub = api(target)
        with hub_errors(f"push to {target.repo} (dry run)", target, write=True):
            if not hub.repo_exists(target.repo, repo_type=REPO_TYPE):
                return {}, target
            if not hub.revision_exists(target.repo, target.revision, repo_type=REPO_TYPE):
                main = HubTarget(target.repo, "main", target.endpoint, target.token)
                return remote_files(main), main
    return remote_files(target), target


def _card_operation(target: HubTarget, current: HubTarget, sets: dict[str, LocalSet],
                    remote: dict[str, RemoteFile], say: Callable[[str], None]) -> list[Operation]:
    """The card describes every set in the repo after this push: these sets, and those already there
    (read from `current`, where `remote` was listed)."""
    videos = [CardVideo(slug, local.index, local.record) for slug, local in sets.items()]
    videos += [_remote_video(current, slug, remote) for slug in slugs_in(list(remote)) if slug not in sets]
    if CARD_FILE in remote and not is_generated(read_remote(current, CARD_FILE).decode("utf-8", "replace")):
        say(f"{CARD_FILE}: written by someone else, left as is (delete it to let wtours write the card)")
        return []
    data = render_card(target.repo, videos, api(target).endpoint, target.revision).encode("utf-8")
    card = Upload(CARD_FILE, len(data), data=data)
    if card.is_in(remote):
        return []
    say(f"{CARD_FILE}: dataset card for {len(videos)} video{'s' if len(videos) != 1 else ''}")
    return [card]


def _remote_video(target: HubTarget, slug: str, remote: dict[str, RemoteFile]) -> CardVideo:
    if source_path(slug) not in remote:
        raise WtoursError(f"{target.repo} holds {slug}/ without {source_path(slug)}, so the card cannot attribute it",
                          f"push it from a data root that has its provenance: `wtours push --city {slug} --repo "
                          f"{target.repo}`")
    index = ShardIndex.parse(read_remote(target, index_path(slug)), f"{target.repo}/{index_path(slug)}")
    return CardVideo(slug, index, read_source_record(target, slug))


def _describe_plan(slug: str, shard_count: int, ops: list[Operation]) -> str:
    if not ops:
        return f"{slug}: up to date ({shard_count} shards)"
    shards = [op for op in ops if isinstance(op, Upload) and op.local is not None]
    parts = [f"{len(shards)} of {shard_count} shards ({sum(op.size for op in shards) / 1e6:.1f} MB)"]
    parts += [op.path.split("/")[-1] for op in ops if isinstance(op, Upload) and op.local is None]
    stale = [op for op in ops if isinstance(op, Delete) and is_shard_path(op.path, slug)]
    if stale:
        parts.append(f"removing {len(stale)} shards no longer in the index")
    return f"{slug}: to upload: " + ", ".join(parts)


def _commit_batches(target: HubTarget, batches: list[list[Operation]], progress: bool, summary: PushSummary) -> None:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    hub = api(target)
    total = sum(op.size for ops in batches for op in ops if isinstance(op, Upload))
    with client_bars(False), tqdm(total=total, unit="B", unit_scale=True, desc="push", disable=not progress) as bar:
        for ops in batches:
            commit_ops: list[CommitOperationAdd | CommitOperationDelete] = []
            for op in ops:
                if isinstance(op, Delete):
                    commit_ops.append(CommitOperationDelete(op.path))
                    continue
                add = CommitOperationAdd(op.path, op.content())
                # One file at a time, so the bar moves per file; the commit then finds it uploaded.
                with hub_errors(f"push to {target.repo}: upload {op.path}", target, write=True):
                    hub.preupload_lfs_files(target.repo, additions=[add], repo_type=REPO_TYPE, revision=target.revision)
                _check_checksum(op, add)
                commit_ops.append(add)
                bar.update(op.size)
            hub.create_commit(target.repo, commit_ops, commit_message=_commit_message(ops), repo_type=REPO_TYPE,
                              revision=target.revision)
            summary.commits += 1
            summary.uploaded += [op.path for op in ops if isinstance(op, Upload)]
            summary.deleted += [op.path for op in ops if isinstance(op, Delete)]
            summary.bytes += sum(op.size for op in ops if isinstance(op, Upload))


def _check_checksum(op: Upload, add) -> None:
    """The client hashed the file to upload it: it must be the file the index describes."""
    if op.sha256 and add.upload_info.sha256.hex() != op.sha256:
        slug = op.path.split("/")[0]
        raise WtoursError(f"{op.local} changed after it was indexed (its sha256 is not the one in index.json)",
                          f"reshard it with `wtours shard --city {slug} --overwrite`, then push again "
                          "(nothing of this commit was committed)")


def _commit_message(ops: list[Operation]) -> str:
    slugs = sorted({op.path.split("/")[0] for op in ops if "/" in op.path})
    added = sum(isinstance(op, Upload) for op in ops)
    deleted = len(ops) - added
    what = f"{added} file{'s' if added != 1 else ''}" + (f", delete {deleted}" if deleted else "")
    return f"wtours push: {', '.join(slugs) or 'dataset card'} ({what})"
