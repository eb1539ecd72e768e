"""The video inside a .zip (as a mirror may serve it): found, checked and extracted safely for `wtours add`."""

from __future__ import annotations

import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from wtours.errors import UsageError

VIDEO_SUFFIXES = (".mp4", ".mkv")  # what the figshare mirror serves (docs/troubleshooting.md)
MAX_RATIO = 100  # a video barely compresses: a member inflating over 100x its stored size is a zip bomb
DISK_MARGIN = 1.02
_CHUNK = 8 << 20


def is_zip(path: Path) -> bool:
    return path.suffix.lower() == ".zip"


def video_member(archive: Path) -> zipfile.ZipInfo:
    """The one mp4/mkv in `archive`; none, several, an encrypted one or one that would inflate like a zip bomb is
    a clear error. The member's name is only read, never used as a path (no zip-slip)."""
    try:
        with zipfile.ZipFile(archive) as z:
            members = z.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        raise UsageError(f"{archive} is not a readable zip archive ({e})",
                         "download it again (it may have been cut short), or unpack it and add the video inside") from e
    videos = [m for m in members if not m.is_dir() and _is_video_name(m.filename)]
    if not videos:
        shown = ", ".join(m.filename for m in members[:5]) or "nothing"
        raise UsageError(f"{archive} holds no .mp4 or .mkv video (it holds {shown})",
                         "add the video file itself, or the mirror's zip of one video")
    if len(videos) > 1:
        raise UsageError(f"{archive} holds {len(videos)} videos ({', '.join(m.filename for m in videos[:5])}); "
                         "wtours add registers one video per name",
                         "unpack the archive and add each video with its own --name")
    member = videos[0]
    if member.flag_bits & 0x1:
        raise UsageError(f"{member.filename} in {archive} is encrypted", "unpack it yourself and add the video")
    if member.file_size > MAX_RATIO * max(member.compress_size, 1):
        raise UsageError(f"{member.filename} in {archive} would inflate {member.compress_size:,} stored bytes to "
                         f"{member.file_size:,} (over {MAX_RATIO}x: not a video, a zip bomb?); nothing was extracted",
                         "check where the archive came from; add the video file itself")
    return member


def _is_video_name(name: str) -> bool:
    """A video by its suffix; macOS's resource forks (`__MACOSX/`, `._name`) are not."""
    path = PurePosixPath(name.replace("\\", "/"))
    return (path.suffix.lower() in VIDEO_SUFFIXES and not path.name.startswith("._")
            and "__MACOSX" not in path.parts)


def video_suffix(member: zipfile.ZipInfo) -> str:
    return PurePosixPath(member.filename.replace("\\", "/")).suffix.lower()


def extract_member(archive: Path, member: zipfile.ZipInfo, to: Path) -> None:
    """Write `member`'s bytes to `to` (a path the caller chose), refusing when the disk cannot hold them; never more
    bytes than the archive declares (zipfile stops there and checks the CRC at the end)."""
    free = shutil.disk_usage(to.parent).free
    if member.file_size * DISK_MARGIN > free:
        raise UsageError(f"{member.filename} needs {member.file_size:,} bytes; {to.parent} has {free:,} free",
                         "free space under the data root (or pass another --root), or unpack the archive elsewhere "
                         "and add the video with --mode symlink")
    try:
        with zipfile.ZipFile(archive) as z, z.open(member) as src, open(to, "wb") as dst:
            written = 0
            while block := src.read(_CHUNK):
                written += len(block)
                if written > member.file_size:  # a lying header: zipfile bounds this already; belt and braces
                    raise zipfile.BadZipFile("more bytes than the archive declares")
                dst.write(block)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
        raise UsageError(f"{member.filename} in {archive} does not extract ({e})",
                         "download the archive again, or unpack it yourself and add the video") from e
