"""`wtours add`: register a video file already on disk (e.g. from the figshare mirror), with the provenance
the user gives for the dataset card's attribution."""

from __future__ import annotations

import contextlib
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from wtours import media
from wtours.errors import UsageError, WtoursError
from wtours.fetch import archive
from wtours.fetch.download import DownloadResult
from wtours.layout import Layout, remove_stale_temporaries, replace_atomically, sha256_file, validate_slug
from wtours.locks import folder_lock
from wtours.manifest import VideoEntry, load_manifest
from wtours.units import format_size
from wtours.video import VideoInfo, read_video_info, write_video_info

PROVENANCE_KEYS = ("url", "title", "uploader", "license")  # what `wtours add` records for attribution
_MAX_TEXT = {"url": 2048, "title": 300, "uploader": 200, "license": 100}
_OPTION_OF = {"url": "--source-url", "title": "--title", "uploader": "--uploader", "license": "--license"}


def validate_provenance(provenance: dict[str, str | None]) -> dict[str, str]:
    """The given attribution fields, checked: an http(s) URL with a host; single-line printable text of a
    sensible length (it lands in a table of the dataset card). A licence is an SPDX id (CC-BY-4.0) or a
    short text ("Creative Commons Attribution license (reuse allowed)", as YouTube states it)."""
    out: dict[str, str] = {}
    for key, value in provenance.items():
        if value is None:
            continue
        option = _OPTION_OF[key]
        text = value.strip()
        if not text or len(text) > _MAX_TEXT[key] or not text.isprintable():
            raise UsageError(f"{option} {value!r} is not a single line of 1 to {_MAX_TEXT[key]} printable characters",
                             "give it as shown at the source, e.g. --uploader 'Jane Walker' --license CC-BY-4.0")
        if key == "url":
            parts = urlsplit(text)
            if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in text):
                raise UsageError(f"--source-url {value!r} is not an http(s) URL",
                                 "give the page the video was published on, e.g. https://www.youtube.com/watch?v=ID")
        out[key] = text
    return out


def add_local(path: str | os.PathLike, name: str, root: Path, mode: str = "link", allow_damaged: bool = False,
              say: Callable[[str], None] = print, force: bool = False,
              provenance: dict[str, str | None] | None = None, mirror: bool = False) -> DownloadResult:
    """Register a video file already on disk (e.g. from the figshare mirror) as <root>/videos/<name>/.

    A file that probes but does not decode to its end is refused unless `allow_damaged`: then it is recorded
    with the reason, and `wtours shard` keeps what decodes. A name already registered to another file is refused
    unless `force` (with --mode move the earlier file may be the user's only copy); the only file ever deleted is
    the one the user named, and only with --mode move. `provenance` (keys of PROVENANCE_KEYS: source page URL,
    title, uploader, licence) is recorded under 'source' for the dataset card's attribution; re-adding keeps the
    fields recorded before unless given anew (corpus videos start from the manifest's URL and licence).

    A .zip holding one mp4/mkv (as a mirror may serve it) is extracted into the video's folder (`mode` does not
    apply: the archive is kept). `mirror`: the file came from the figshare mirror, which is recorded as the source
    (its page, the file's name and the archive's sha256) beside the original publication (MirrorSource)."""
    slug = validate_slug(name)
    given = validate_provenance(provenance or {})
    source_path = Path(path).expanduser().resolve()
    if not source_path.is_file():
        raise UsageError(f"{path} does not exist or is not a file", "give the path of a video file")
    layout = Layout(root)
    member = archive.video_member(source_path) if archive.is_zip(source_path) else None
    _refuse_replacing(layout, slug, source_path, force)  # at once, before the decode check
    checked = None if member else _checked_video(source_path, allow_damaged, slug, say)
    with folder_lock(layout.video_dir(slug), f"video folder of {slug}"):  # which also creates the folder
        current, existing = _refuse_replacing(layout, slug, source_path, force)  # again, under the lock
        if remove_stale_temporaries(layout.video_dir(slug)):  # a killed add's copy (gigabytes for a real walk)
            say(f"{slug}: removed the temporary copy left by an interrupted run")
        earlier = existing.source if existing else {}  # the attribution recorded before (an add or a download)
        if current is not None:
            say(f"{slug}: replacing the registered video {current.name} (--force)")
        if member is None:
            assert checked is not None
            final = layout.video_path(slug, source_path.suffix[1:].lower() or "mp4")
            _place(source_path, final, mode)
        else:
            say(f"{slug}: extracting {member.filename} ({format_size(member.file_size)}) from {source_path.name}")
            final = layout.video_path(slug, archive.video_suffix(member)[1:])
            checked = replace_atomically(final, lambda tmp: _extract_checked(source_path, member, tmp,
                                                                              allow_damaged, slug, say))
        probed, damaged = checked
        entry = load_manifest().get(slug)
        source = _source_record(source_path, entry, mirror, member.filename if member else None)
        kept = {k: v for k, v in earlier.items()
                if k in (*PROVENANCE_KEYS, "channel_url", "id") and v and k not in given and source.get(k) != v
                and not (mirror and k == "url")}  # a mirror add records the mirror's page as where it came from
        source |= kept | given
        if any(k in _OPTION_OF for k in kept):
            say(f"{slug}: keeping the recorded {', '.join(sorted(kept))} "
                f"(give {', '.join(_OPTION_OF[k] for k in sorted(kept) if k in _OPTION_OF)} to change)")
        info = write_video_info(layout, slug, final, probed, source, entry, damaged=damaged)
        say(f"{slug}: added {final} ({probed.width}x{probed.height}, {probed.fps:.2f} fps, {probed.duration:.1f} s, "
            f"sha256 {info.sha256})")
        return DownloadResult(slug, final, "added")


def _checked_video(video: Path, allow_damaged: bool, slug: str,
                   say: Callable[[str], None]) -> tuple[media.ProbeResult, str | None]:
    """`video` probed and decoded at both ends: its probe, and what is damaged (None: nothing); a damaged file is
    refused unless `allow_damaged`."""
    probed = media.probe(video)
    try:
        media.verify_decodes(video, probed.duration)
    except media.ProbeError as e:
        if not allow_damaged:
            e.hint = (e.hint or "") + "; or register it anyway with --allow-damaged (shard keeps what decodes)"
            raise
        say(f"{slug}: warning: {e.message}; registering it anyway (--allow-damaged)")
        return probed, e.message
    return probed, None


def _extract_checked(zip_path: Path, member: zipfile.ZipInfo, tmp: Path, allow_damaged: bool, slug: str,
                     say: Callable[[str], None]) -> tuple[media.ProbeResult, str | None]:
    """`member` extracted to `tmp` and checked as an added file is; an error names the member, not `tmp`."""
    archive.extract_member(zip_path, member, tmp)
    try:
        return _checked_video(tmp, allow_damaged, slug, say)
    except media.ProbeError as e:
        e.message = e.message.replace(str(tmp), f"{member.filename} (in {zip_path.name})")
        raise


def _source_record(source_path: Path, entry: VideoEntry | None, mirror: bool,
                   member: str | None) -> dict[str, Any]:
    """What info.json records as the source of an added file: the user's path (and the archive member), the
    corpus entry's page and licence; from the mirror, the mirror's page as the URL, the file's name there and the
    original publication's page as `original_url`."""
    source: dict[str, Any] = {"type": "local", "path": str(source_path), "url": entry.url if entry else None,
                              "id": entry.youtube_id if entry else None, "title": None, "uploader": None,
                              "channel_url": None, "license": entry.license if entry else None}
    if member is not None:
        source |= {"archive_member": member, "archive_sha256": sha256_file(source_path)}
    if mirror:
        source |= {"type": "mirror", "url": load_manifest().mirror.url, "mirror_file": source_path.name,
                   "original_url": entry.url if entry else None}
    return source


def _refuse_replacing(layout: Layout, slug: str, source_path: Path,
                      force: bool) -> tuple[Path | None, VideoInfo | None]:
    """The record of `slug` (None: none, or a damaged one replaced with `force`), and the file it registers where
    that is another video than `source_path` (re-adding the same file, or a copy of it, is harmless): refused
    unless `force`."""
    existing = None
    try:
        existing = read_video_info(layout, slug)
        if existing is None:
            return None, None
        current = layout.video_file(slug, existing.file)
    except WtoursError as damaged:  # which file it names cannot be told: replace it only when asked to
        if force:
            return None, existing
        raise UsageError(f"{slug!r} has a damaged record under {layout.root} ({damaged.message}); nothing was "
                         "changed", f"pass --force to register {source_path} in its place") from None
    with contextlib.suppress(OSError):
        if current.resolve() == source_path or (current.exists() and os.path.samefile(current, source_path)):
            return None, existing
    if source_path.stat().st_size == existing.bytes and sha256_file(source_path) == existing.sha256:
        return None, existing  # the same video again (e.g. a copy): nothing is lost by registering it anew
    if existing.source.get("archive_sha256") and existing.source["archive_sha256"] == sha256_file(source_path):
        return None, existing  # the archive it was extracted from, again
    if not force:
        raise UsageError(
            f"{slug!r} is already registered under {layout.root} (as {current}); nothing was changed",
            f"choose another --name, or pass --force to replace the registered video with {source_path}"
            + (" (the earlier file in the data root is then replaced)" if current.exists() else ""))
    return current, existing


def _place(source: Path, final: Path, mode: str) -> None:
    """Copy, hard-link, symlink or move `source` to `final`, atomically (temporary name, then rename)."""
    if final.exists() and final.resolve() == source:
        return
    if mode not in ("link", "symlink", "copy", "move"):
        raise UsageError(f"unknown mode {mode!r}", "use copy, link, symlink or move")
    replace_atomically(final, lambda tmp: _put(source, tmp, mode))
    if mode == "move":
        source.unlink()  # only once the copy is in place: a failure never loses the original


def _put(source: Path, tmp: Path, mode: str) -> None:
    if mode == "symlink":
        os.symlink(source, tmp)
        return
    if mode in ("link", "move"):
        with contextlib.suppress(OSError):  # another filesystem: fall back to a copy
            os.link(source, tmp)
            return
    shutil.copyfile(source, tmp)
