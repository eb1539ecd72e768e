"""The registered video: what `wtours download` and `wtours add` record in <root>/videos/<slug>/info.json,
typed (`VideoInfo`), and the one check that the file on disk is still the one recorded (`registered_video`).

Every reader of info.json goes through `read_video_info`: the file is the project's own, but a user may
edit or damage it, so its fields are checked once here and never looked up by string key elsewhere."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wtours import __version__, media
from wtours.errors import WtoursError
from wtours.layout import Layout, read_json, sha256_file, write_json_atomic
from wtours.manifest import VideoEntry
from wtours.records import read_record

DAMAGED_HINT = ("register the video again: `wtours add FILE --name SLUG --force` (or `wtours download`, which "
                "fetches it anew)")


@dataclass(frozen=True)
class VideoInfo:
    """info.json: the file, its checksum and size when recorded, ffprobe's facts and where it came from."""

    slug: str
    file: str  # the file's name in the video's folder
    sha256: str
    bytes: int
    probe: media.ProbeResult
    source: dict[str, Any] = field(default_factory=dict)  # yt-dlp's record, or `wtours add`'s provenance
    mtime_ns: int | None = None  # a file whose size and mtime are unchanged is not hashed again
    city: str | None = None
    kind: str | None = None
    recorded_at: str | None = None
    tool: dict[str, Any] = field(default_factory=dict)
    damaged: str | None = None  # `wtours add --allow-damaged`: what the decode check found

    @property
    def source_id(self) -> str | None:
        value = self.source.get("id")
        return value if isinstance(value, str) else None


def read_video_info(layout: Layout, slug: str) -> VideoInfo | None:
    """The registered video's record, or None when none is registered under `slug`. Every field is checked, the
    probe's too: a damaged or hand-edited info.json fails naming the key."""
    path = layout.info_path(slug)
    data = read_json(path)
    return None if data is None else read_record(VideoInfo, data, str(path), DAMAGED_HINT)


def write_video_info(layout: Layout, slug: str, path: Path, probed: media.ProbeResult, source: dict[str, Any],
                     entry: VideoEntry | None, damaged: str | None = None) -> VideoInfo:
    """Record `path` (already in the video's folder) as `slug`'s video: its checksum, size and probe."""
    stat = path.stat()
    info = VideoInfo(
        slug=slug, file=path.name, sha256=sha256_file(path), bytes=stat.st_size, probe=probed, source=source,
        mtime_ns=stat.st_mtime_ns, city=entry.city if entry else None, kind=entry.kind if entry else None,
        recorded_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        tool={"wtours": __version__, "ffmpeg": media.find_tools().source}, damaged=damaged)
    record = {k: v for k, v in asdict(info).items() if k != "damaged" or v is not None}  # damaged: only when it is
    write_json_atomic(layout.info_path(slug), record)
    return info


def completed_file(layout: Layout, slug: str, rehash: bool = False) -> Path | None:
    """The recorded video file if info.json says it is complete and the file still matches it (a damaged
    info.json records nothing complete: the video is fetched again)."""
    try:
        return _checked(layout, slug, rehash)[1]
    except WtoursError:
        return None


def registered_video(layout: Layout, slug: str) -> tuple[VideoInfo, Path]:
    """The video registered as `slug`, checked to be the file recorded (size, and checksum when its mtime
    changed); a missing or changed file is a clear error saying how to register it again."""
    return _checked(layout, slug, False)


def _checked(layout: Layout, slug: str, rehash: bool) -> tuple[VideoInfo, Path]:
    """`slug`'s record and file, the file checked against it: its size, and its checksum when its mtime changed
    (or `rehash`)."""
    info = read_video_info(layout, slug)
    if info is None:
        raise WtoursError(f"no video registered as {slug!r} under {layout.root}",
                          f"run `wtours download --city {slug}` or `wtours add FILE --name {slug}` first")
    path = layout.video_file(slug, info.file)
    if not path.is_file():
        raise WtoursError(f"{path} is missing", f"download or add {slug} again")
    stat = path.stat()
    if stat.st_size != info.bytes or ((rehash or stat.st_mtime_ns != info.mtime_ns)
                                      and sha256_file(path) != info.sha256):
        raise WtoursError(f"{path} changed since it was recorded (size or checksum differ)",
                          f"register it again with `wtours add {path} --name {slug}` (or download it again)")
    return info, path
