"""SPEC -> shard list: a slug in the root, local paths/braces/globs, http(s) braces, hf:// braces,
fsspec URLs (s3://, gs://, file://, ...) with braces/globs, and webdataset's `pipe:COMMAND`. Every shard
comes with what its set's index.json says about it (samples, grid fps, cell runs), so epoch lengths are
exact before any shard is opened.

A `pipe:` SPEC is a shell command the user typed: it runs only as given on the command line (after
brace expansion), one per shard. Other shard URLs come from a folder and the index's names, which are
checked (`layout.validate_shard_name`), so a fetched index.json or Hub listing can never run a command."""

from __future__ import annotations

import glob
import math
import os
import posixpath
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from braceexpand import braceexpand

from wtours.errors import UsageError, WtoursError
from wtours.layout import INDEX_FILE, SHARD_NAME_PATTERN, Layout, shard_number
from wtours.locks import refuse_if_written
from wtours.redact import HIDDEN, shown
from wtours.shard.index import ShardEntry, ShardIndex
from wtours.streams import PIPE_PREFIX, check_hf_url, glob_urls, open_url, require_backend, url_scheme

SPEC_SEPARATOR = "::"


@dataclass(frozen=True)
class ShardRef:
    """Where one shard of a set is read from, with its index entry (samples, cell runs, byte offsets, and
    the sha256s that a remote read is checked against: shard.read.open_samples)."""

    url: str  # local path, http(s), hf:// or fsspec URL, or `pipe:COMMAND` (the user's, never an index's)
    slug: str
    fps: float  # the set's sampling grid (cells per second)
    entry: ShardEntry
    t_decimals: int | None = None  # version-1 indexes rounded the samples' `t` to 6 decimals (shard.plan.sample_cell)


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


def local_folders(refs: Iterable[ShardRef]) -> list[Path]:
    """The local folders the shards are read from: the sets a reader holds (wtours.locks.reading)."""
    return list(dict.fromkeys(Path(ref.url).parent for ref in refs if url_scheme(ref.url) is None))


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
            raise UsageError(f"SPEC {shown(spec)!r} matches no shard", SPEC_HINT)
        sets.extend(found)
    return sets


SPEC_HINT = ("a SPEC is a video slug with shards under --root, a folder holding index.json (./NAME for one named like "
             "a video), a local pattern such as "
             "'/data/shards/venice/venice-{000000..000009}.tar', the same as an http(s)://, "
             "hf://datasets/USER/NAME/..., s3://, gs:// or file:// URL, or 'pipe:COMMAND' (e.g. "
             "'pipe:cat /data/venice/venice-{000000..000009}.tar'); run `wtours list` to see what is sharded")


def _resolve_one(spec: str, layout: Layout) -> list[ShardSet]:
    if HIDDEN in spec:  # a shown SPEC (config.json, a checkpoint, a card): its credentials were never stored
        raise UsageError(f"SPEC {shown(spec)!r} has {HIDDEN} where wtours hid part of it (credentials, options, "
                         "a query)",
                         "pass the whole SPEC again with --shards (wtours stores and shows only its shown form; "
                         "docs/troubleshooting.md, \"Secrets in a SPEC\")")
    if spec.startswith(PIPE_PREFIX):
        return _resolve_pipe(spec)
    if "://" in spec:
        return _resolve_remote(spec)
    if layout.names_set(spec):
        if not layout.index_path(spec).is_file():
            refuse_if_written(layout.shard_dir(spec))
            from wtours.manifest import load_manifest

            # not a corpus video, nor one registered or being sharded: a typo, not a step left to run
            if not (spec in load_manifest().slugs or spec in layout.video_slugs() or spec in layout.sharded_slugs()):
                raise UsageError(f"SPEC {spec!r} names no video: not a corpus video, nor one registered or "
                                 f"sharded under {layout.root}", SPEC_HINT)
            raise WtoursError(f"SPEC {spec!r}: no shard index at {layout.index_path(spec)}",
                              f"run `wtours shard --city {spec}` first, or pass --root")
        return [_local_set(str(layout.shard_dir(spec)), None)]
    path = Path(spec).expanduser()
    if path.is_dir() or path.name == INDEX_FILE:
        return [_local_set(str(path if path.is_dir() else path.parent), None)]
    patterns = _expand(str(path))
    files = sorted({f for pattern in patterns for f in (glob.glob(pattern) or [])})
    # A name the braces spell out (no wildcard) that is not on disk is asked for, as it is from a server:
    # past the set's end it is an error naming the last shard, not a silently shorter range.
    asked = files + [p for p in patterns if not glob.has_magic(p) and not os.path.exists(p)
                     and Path(p).parent.joinpath(INDEX_FILE).is_file()]
    return [_local_set(folder, {Path(f).name for f in asked if str(Path(f).parent) == folder})
            for folder in sorted({str(Path(f).parent) for f in asked})]


def _local_set(folder: str, names: set[str] | None) -> ShardSet:
    index = ShardIndex.read(Path(folder) / INDEX_FILE)
    if index is None:
        refuse_if_written(Path(folder))
        raise WtoursError(f"no shard index at {Path(folder) / INDEX_FILE}",
                          "shards made by `wtours shard` have index.json beside them; "
                          "rerun `wtours shard` to finish it")
    return _shard_set(index, folder, names)


MAX_NAMES = 100_000  # names one SPEC may spell out: a corpus video has tens of shards, the whole corpus hundreds
_GROUP = re.compile(r"\{([^{}]*)\}")  # an innermost brace group
_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?")


def spelled_out(spec: str) -> int:
    """At most how many names `spec`'s braces spell out (each group's size multiplied, innermost first), counted
    from the text: braceexpand builds every range in memory before it yields a name."""
    sizes = []

    def size(group: re.Match) -> str:
        bounds = _RANGE.fullmatch(group[1])
        step = abs(int(bounds[3] or 1)) or 1 if bounds else 1
        sizes.append(abs(int(bounds[2]) - int(bounds[1])) // step + 1 if bounds else group[1].count(",") + 1)
        return "#"

    text, found = spec, 1
    while found:
        text, found = _GROUP.subn(size, text)
    return math.prod(sizes)


def _expand(spec: str) -> list[str]:
    if (count := spelled_out(spec)) > MAX_NAMES:
        raise UsageError(f"SPEC {spec!r} spells out {count} names, more than the {MAX_NAMES} a SPEC may",
                         "end its range at the set's last shard (`wtours inspect SLUG` lists them), or give the "
                         "set's folder or slug to take every shard")
    try:
        return list(braceexpand(spec))
    except Exception as e:  # noqa: BLE001 (braceexpand's UnbalancedBracesError and friends)
        raise UsageError(f"SPEC {shown(spec)!r}: {e}",
                         "braces must be balanced, e.g. 'venice-{000000..000013}.tar'") from e


def _resolve_remote(spec: str) -> list[ShardSet]:
    query = ""  # an http(s) query (`?token=...`) is sent with every request of the set: its index's and shards'
    if spec.startswith(("http://", "https://")):
        spec, sep, query = spec.partition("?")
        query = sep + query
    urls = _expand(spec)
    if spec.startswith("hf://"):
        urls = [check_hf_url(u) for u in urls]
    elif not spec.startswith(("http://", "https://")):
        require_backend(urls[0])  # an unknown scheme or a missing package fails here, naming it
    if any(ch in spec for ch in "*?[") and not spec.startswith(("http://", "https://")):
        urls = sorted(found for u in urls for found in glob_urls(u))
    # A URL naming neither a shard nor an index is a set's folder (`s3://bucket/venice/`): its index names the shards.
    urls = [f"{u.rstrip('/')}/{INDEX_FILE}" if "." not in u.rstrip("/").rsplit("/", 1)[-1] else u for u in urls]
    sets: list[ShardSet] = []
    for folder in dict.fromkeys(posixpath.dirname(u) for u in urls):
        names: set[str] | None = {posixpath.basename(u) for u in urls if posixpath.dirname(u) == folder}
        if names == {INDEX_FILE}:
            names = None  # the spec named an index: take all its shards
        found = _shard_set(read_remote_index(f"{folder}/{INDEX_FILE}{query}"), folder, names)
        sets.append(replace(found, refs=tuple(replace(r, url=r.url + query) for r in found.refs)))
    return sets


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
        raise UsageError("SPEC 'pipe:': no command after 'pipe:'", PIPE_INDEX_HINT)
    by_folder: dict[str, dict[str, str]] = {}  # the .tar argument's folder -> shard name -> its pipe: URL
    for url in _expand(spec):
        target = _pipe_target(url)
        folder = (posixpath.dirname(target) if "://" in target else os.path.dirname(target)) or "."
        by_folder.setdefault(folder, {})[posixpath.basename(target)] = url
    sets: list[ShardSet] = []
    for folder, commands in by_folder.items():
        found = _pipe_set(spec, folder, set(commands))
        sets.append(replace(found, refs=tuple(replace(r, url=commands[r.entry.name]) for r in found.refs)))
    return sets


def _pipe_target(url: str) -> str:
    """The shard file a pipe: command reads: its last argument ending in .tar (a path or a URL)."""
    lexer = shlex.shlex(url[len(PIPE_PREFIX):], posix=True, punctuation_chars=True)  # `x.tar;` -> `x.tar`, `;`
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError as e:
        raise UsageError(f"SPEC {shown(url)!r}: {e}", "quote the command's arguments in pairs") from e
    target = next((w for w in reversed(words) if w.endswith(".tar")), None)
    if target is None:
        raise UsageError(f"SPEC {shown(url)!r}: the command names no .tar file",
                          "a pipe: command names the shard it reads, e.g. 'pipe:cat /data/venice/venice-000000.tar'; "
                          + PIPE_INDEX_HINT)
    return os.path.expanduser(target) if "://" not in target else target


def _pipe_set(spec: str, folder: str, names: set[str]) -> ShardSet:
    if url_scheme(folder) is None:  # a path: the index must be here (the command may read another machine's)
        if not (Path(folder) / INDEX_FILE).is_file():
            raise UsageError(f"SPEC {shown(spec)!r}: no {INDEX_FILE} in {shown(folder)!r} on this machine",
                             PIPE_INDEX_HINT)
        return _local_set(folder, names)
    try:
        index = read_remote_index(f"{folder}/{INDEX_FILE}")
    except WtoursError as e:
        raise WtoursError(f"SPEC {shown(spec)!r}: cannot read the index beside its shards: {e.message}",
                          PIPE_INDEX_HINT) from e
    return _shard_set(index, folder, names)


def read_remote_index(url: str) -> ShardIndex:
    """An index.json at an http(s), hf:// or fsspec URL (never a pipe: command)."""
    if url_scheme(url) == "pipe":
        raise WtoursError(f"{shown(url)!r}: an index is never read by running a command", PIPE_INDEX_HINT)
    with open_url(url) as f:
        return ShardIndex.parse(f.read(), shown(url))


def _shard_set(index: ShardIndex, folder: str, names: set[str] | None) -> ShardSet:
    """The set's shards that `names` names (None: all of them)."""
    listed = {s.name for s in index.shards}
    if names is not None and (unknown := sorted(names - listed - {INDEX_FILE})):
        raise _unlisted_error(index, folder, unknown)
    join = posixpath.join if "://" in folder else os.path.join
    t_decimals = 6 if index.version == 1 else None
    return ShardSet(folder, index, tuple(ShardRef(join(folder, s.name), index.slug, index.fps, s, t_decimals)
                                         for s in index.shards if names is None or s.name in names))


def _unlisted_error(index: ShardIndex, folder: str, unknown: list[str]) -> WtoursError:
    """Shards a SPEC names that the index does not list: a range past the set's end is the user's to
    fix (a usage error saying where the set ends); any other name means the index and shards disagree."""
    last = index.shards[-1].name if index.shards else None
    last_number = shard_number(last) if last else -1
    past = [n for n in unknown if (m := SHARD_NAME_PATTERN.fullmatch(n)) and m.group("slug") == index.slug
            and int(m.group("number")) > last_number]
    names = ", ".join(repr(shown(n)) for n in unknown[:3]) + (" ..." if len(unknown) > 3 else "")
    if past and len(past) == len(unknown):
        span = f"{index.shards[0].name}..{last}" if last else "none"
        return UsageError(f"{shown(folder)}: the SPEC asks for {names}, past the last shard of {index.slug} "
                          f"({len(index.shards)} shards: {span})",
                          f"end the range at {last_number:06d}, e.g. '{index.slug}-{{000000..{last_number:06d}}}.tar', "
                          "or give the set's folder or slug to take every shard")
    return WtoursError(f"{shown(folder)}: {names} not listed in its index.json",
                       "the index and the shards disagree: rerun `wtours shard` for this video")
