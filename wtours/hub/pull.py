"""`wtours pull`: download shard sets from a Hub dataset repo into the local layout, verified, resumable.

A shard is fetched to `.<name>.tmp-pull` beside its final name (a rerun continues it with a Range
request), checked against the index's sha256, then renamed: a final name never holds a partial or
unverified file. A shard already present with the right checksum is kept. The index is written last
(docs/data-format.md), so its presence still means the set is complete."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from wtours.errors import WtoursError
from wtours.hfclient import hub_errors
from wtours.hub.client import (
    HubTarget,
    RemoteFile,
    open_remote,
    read_remote,
    read_source_record,
    remote_files,
)
from wtours.hub.paths import index_path, shard_path, slugs_in, source_path
from wtours.layout import PULLED_FROM, Layout, replace_atomically, write_json_atomic
from wtours.locks import folder_lock
from wtours.shard.card import write_local_card
from wtours.shard.index import ShardEntry, ShardIndex
from wtours.shard.verify import quick_problem

BLOCK_SIZE = 8 << 20  # bytes per ranged GET (each one retried by the client on transient errors)
PART_SUFFIX = ".tmp-pull"  # `.<name>.tmp-*`: the shard folder's temporary-file pattern (`shard --overwrite` clears it)


@dataclass(frozen=True)
class PullConfig:
    target: HubTarget
    slugs: tuple[str, ...] = ()  # empty: every shard set in the repo
    progress: bool = True


@dataclass
class PullSummary:
    root: Path
    downloaded: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    bytes: int = 0

    def line(self) -> str:
        kept = f"; {len(self.kept)} already present and verified" if self.kept else ""
        return f"pulled {len(self.downloaded)} shards ({self.bytes / 1e6:.1f} MB) into {self.root}{kept}"


@dataclass(frozen=True)
class RemoteSet:
    slug: str
    index: ShardIndex
    source: dict[str, Any] | None
    missing: list[ShardEntry]  # shard entries to download
    present: list[ShardEntry]  # shard entries already on disk with their checksum


def pull(layout: Layout, config: PullConfig, say: Callable[[str], None] = print) -> PullSummary:
    target = config.target
    remote = remote_files(target)
    sets = [_remote_set(layout, target, slug, remote) for slug in _chosen_slugs(target, remote, config.slugs)]
    for item in sets:
        size = sum(s.bytes for s in item.missing) / 1e6
        say(f"{item.slug}: {len(item.missing)} of {len(item.index.shards)} shards to download ({size:.1f} MB)"
            if item.missing else f"{item.slug}: up to date ({len(item.index.shards)} shards verified)")
    # what a pull that returns has done (a failure raises)
    summary = PullSummary(layout.root, [shard_path(i.slug, s.name) for i in sets for s in i.missing],
                          [shard_path(i.slug, s.name) for i in sets for s in i.present],
                          sum(s.bytes for i in sets for s in i.missing))
    with tqdm(total=summary.bytes, unit="B", unit_scale=True, desc="pull", disable=not config.progress) as bar:
        for item in sets:  # one writer per shard folder: two pulls would append to the same part file
            with folder_lock(layout.shard_dir(item.slug), f"shard folder of {item.slug}"):
                for shard in item.missing:
                    final = layout.shard_file(item.slug, shard.name)
                    fetch_shard(target, shard_path(item.slug, shard.name), final, shard, bar.update)
                if item.source is not None:  # with where it came from: an export links the dataset repo
                    write_json_atomic(layout.source_path(item.slug), {**item.source, PULLED_FROM: {
                        "repo": target.repo, "revision": target.revision}})
                item.index.write(layout.shard_dir(item.slug))  # last: its presence means every shard is here
    if sets:
        write_local_card(layout)  # `datasets` loads the pulled sets by it (left alone when it is not our local card)
    return summary


def _chosen_slugs(target: HubTarget, remote: dict[str, RemoteFile], wanted: tuple[str, ...]) -> list[str]:
    available = slugs_in(list(remote))
    if not available:
        raise WtoursError(f"{target.repo}@{target.revision} holds no shard sets (no <slug>/index.json)",
                          "check --repo and --revision; `wtours push --city SLUG --repo USER/NAME` uploads one")
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise WtoursError(f"{target.repo} has no shard set {', '.join(map(repr, unknown))}",
                          f"it holds: {', '.join(available)}")
    return list(wanted) or available


def _remote_set(layout: Layout, target: HubTarget, slug: str, remote: dict[str, RemoteFile]) -> RemoteSet:
    where = f"{target.repo}/{index_path(slug)}"
    # Validated before any path is built: shard names must be this set's, never paths (`../x.tar`).
    index = ShardIndex.parse(read_remote(target, index_path(slug)), where)
    if index.slug != slug:
        raise WtoursError(f"{where} describes {index.slug!r}, not {slug!r}", "re-push the set")
    local = ShardIndex.read(layout.index_path(slug))
    if local is not None and local != index:
        raise WtoursError(f"{layout.shard_dir(slug)} holds another shard set of {slug} (its index.json differs)",
                          "pull into another --root, or move that folder away first")
    absent = [s.name for s in index.shards if shard_path(slug, s.name) not in remote]
    if absent:
        raise WtoursError(f"{where} lists {len(absent)} shards the repo does not hold ({', '.join(absent[:3])})",
                          "the repo was edited after the push: rerun `wtours push` from the machine with the shards")
    source = read_source_record(target, slug) if source_path(slug) in remote else None
    missing = [s for s in index.shards if quick_problem(layout.shard_file(slug, s.name), s)]
    return RemoteSet(slug, index, source, missing, [s for s in index.shards if s not in missing])


def fetch_shard(target: HubTarget, repo_path: str, final: Path, shard: ShardEntry,
                progress: Callable[[int], Any] = lambda n: None) -> None:
    """Download to the temporary name (continuing one a previous run left), verify the whole file, rename."""
    part = final.with_name(f".{final.name}{PART_SUFFIX}")
    if part.is_file() and part.stat().st_size > shard.bytes:
        part.unlink()  # not a part of this shard
    offset = part.stat().st_size if part.is_file() else 0
    progress(offset)
    with hub_errors(f"download {target.repo}/{repo_path}", target):
        with open_remote(target, repo_path, BLOCK_SIZE) as src, open(part, "ab") as out:
            src.seek(offset)
            while offset < shard.bytes and (block := src.read(min(BLOCK_SIZE, shard.bytes - offset))):
                out.write(block)
                offset += len(block)
                progress(len(block))
    if offset != shard.bytes or quick_problem(part, shard):
        part.unlink()
        raise WtoursError(f"{target.repo}/{repo_path}: downloaded {offset} bytes whose sha256 is not the index's",
                          "rerun `wtours pull` (it downloads the shard again); if it fails again, the repo holds "
                          "another file than its index describes: re-push it")
    # The resumable part outlives a failed run, so it is moved to the atomic writer's temporary name only
    # once verified; `replace_atomically` then fsyncs it and the folder around the rename.
    replace_atomically(final, lambda tmp: os.replace(part, tmp))
