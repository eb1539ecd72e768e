"""Fetching videos into the data root: yt-dlp downloads, local files, provenance and verification."""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wtours import __version__, media
from wtours.errors import UsageError, WtoursError
from wtours.layout import Layout, replace_atomically, sha256_file, validate_slug, write_json_atomic
from wtours.locks import folder_lock
from wtours.manifest import VideoEntry, load_manifest
from wtours.ytdlp_options import YtdlpSettings

log = logging.getLogger(__name__)

MIRROR_HINT = ("the videos are also mirrored on figshare (article 25189275, 'Dora_WalkingTours_Dataset_ICLR_2024'); "
               "download a file there and register it with `wtours add FILE --name SLUG`")
COOKIES_HINT = ("YouTube asks to sign in ('confirm you're not a bot'): pass cookies from a browser that is logged in "
                "to YouTube, `--cookies cookies.txt` (Netscape format) or `--cookies-from-browser firefox`; ")
JS_HINT = ("yt-dlp needs a JavaScript runtime for full YouTube support: install deno (https://deno.com) and "
           "`pip install yt-dlp-ejs`, then rerun")
DISK_MARGIN = 1.02  # keep 2% headroom over the announced size
DEFAULT_RETRIES = 10  # yt-dlp's command line default (its Python API has 0)


@dataclass(frozen=True)
class DownloadConfig:
    root: Path
    max_height: int = 2160
    retries: int | None = None  # None: the user's yt-dlp config's, else DEFAULT_RETRIES
    rate_limit: str | None = None  # e.g. "5M" (bytes per second)
    cookies: str | None = None
    cookies_from_browser: str | None = None
    verify: bool = False  # re-hash completed files instead of the size/mtime quick check
    progress: bool = True
    ytdlp: YtdlpSettings = field(default_factory=YtdlpSettings)  # the user's yt-dlp config and --yt-dlp-option


@dataclass(frozen=True)
class DownloadTarget:
    slug: str
    url: str
    source_id: str | None = None
    entry: VideoEntry | None = None  # manifest entry, for corpus videos

    @classmethod
    def from_manifest(cls, entry: VideoEntry) -> DownloadTarget:
        return cls(entry.slug, entry.url, entry.youtube_id, entry)

    @classmethod
    def from_url(cls, url: str, name: str) -> DownloadTarget:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--url {url!r} is not an http(s) URL",
                              "for a file on disk use `wtours add PATH --name NAME`")
        slug = validate_slug(name)
        return cls(slug, url, None, load_manifest().get(slug))


@dataclass(frozen=True)
class DownloadResult:
    slug: str
    path: Path
    status: str  # "downloaded", "skipped" or "added"
    info: dict[str, Any]


def resolve_targets(cities: tuple[str, ...], all_videos: bool, url: str | None,
                    name: str | None) -> list[DownloadTarget]:
    manifest = load_manifest()
    if url or name:
        if not (url and name):
            raise UsageError("--url and --name go together",
                              "e.g. `wtours download --url https://host/walk.mp4 --name my-walk`")
        return [DownloadTarget.from_url(url, name)]
    if all_videos:
        return [DownloadTarget.from_manifest(v) for v in manifest.videos]
    if not cities:
        raise UsageError("nothing to download",
                          "name a video with --city SLUG (repeatable), --all, or --url URL --name NAME")
    targets: list[DownloadTarget] = []
    for city in cities:
        if any(ch in city for ch in "/\\") or ".." in city:
            validate_slug(city)  # a path is never a video name: reject it as such
        target = DownloadTarget.from_manifest(manifest.resolve(city))
        if target not in targets:
            targets.append(target)
    return targets


def describe_plan(targets: list[DownloadTarget], layout: Layout, config: DownloadConfig) -> list[dict[str, Any]]:
    """What a download would fetch and where; touches no network (for --dry-run)."""
    settings = config.ytdlp.to_dict()
    rows = []
    for t in targets:
        rows.append({"slug": t.slug, "id": t.source_id, "url": t.url,
                     "target": str(layout.download_template(t.slug, "<ext>")),
                     "format": config.ytdlp.from_option.get("format") or format_selector(config.max_height),
                     "yt_dlp": settings,
                     "complete": completed_file(layout, t.slug) is not None})
    return rows


def format_selector(max_height: int) -> str:
    """Best video stream up to max_height whatever its codec (YouTube has 2160p only as VP9/AV1).

    `height<=?` also admits formats of unknown height (direct file links)."""
    return f"bv*[height<=?{max_height}]/b[height<=?{max_height}]"


# ---------------------------------------------------------------- completed files


def completed_file(layout: Layout, slug: str, rehash: bool = False) -> Path | None:
    """The recorded video file if info.json says it is complete and the file still matches it."""
    info = layout.read_info(slug)
    if not info or "sha256" not in info or "file" not in info:
        return None
    path = layout.video_file(slug, info["file"])
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    if stat.st_size != info.get("bytes"):
        return None
    if rehash or stat.st_mtime_ns != info.get("mtime_ns"):
        if sha256_file(path) != info["sha256"]:
            return None
    return path


def probe_and_verify(path: Path) -> media.ProbeResult:
    result = media.probe(path)
    media.verify_decodes(path, result.duration)
    return result


def _reject(path: Path, error: WtoursError) -> WtoursError:
    """Move a file that failed verification off its final name, keeping it for inspection."""
    if path.exists():
        rejected = Layout.rejected_path(path)
        os.replace(path, rejected)
        error.message += f" (kept as {rejected.name} for inspection)"
    return error


def write_info(layout: Layout, slug: str, path: Path, probed: media.ProbeResult, source: dict[str, Any],
               entry: VideoEntry | None, damaged: str | None = None) -> dict[str, Any]:
    stat = path.stat()
    info = {
        "slug": slug,
        "city": entry.city if entry else None,
        "kind": entry.kind if entry else None,
        "file": path.name,
        "source": source,
        "sha256": sha256_file(path),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "probe": probed.to_dict(),
        "recorded_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "tool": {"wtours": __version__, "ffmpeg": media.find_tools().source},
    }
    if damaged:
        info["damaged"] = damaged
    write_json_atomic(layout.info_path(slug), info)
    return info


# ---------------------------------------------------------------- yt-dlp


class _YtdlpLogger:
    """Routes yt-dlp's messages to logging and remembers warnings for error hints."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def debug(self, msg: str) -> None:
        log.debug(msg)

    def info(self, msg: str) -> None:
        log.info(msg)

    def warning(self, msg: str) -> None:
        self.warnings.append(msg)
        log.warning(msg)

    def error(self, msg: str) -> None:
        log.debug(msg)  # surfaced through the raised DownloadError instead


def _ytdlp_options(config: DownloadConfig, outtmpl: str, logger: _YtdlpLogger,
                   hooks: list[Callable[[dict], None]]) -> dict[str, Any]:
    """Layered, later wins: wtours' defaults, the user's yt-dlp config, wtours flags given, --yt-dlp-option,
    and last the options that carry wtours' contract (see wtours/ytdlp_options.py)."""
    options: dict[str, Any] = {
        "format": format_selector(config.max_height),
        "retries": DEFAULT_RETRIES,  # the Python API defaults to 0 retries (the CLI to 10)
        "fragment_retries": DEFAULT_RETRIES,
        "extractor_retries": 3,
        "file_access_retries": 3,
        "socket_timeout": 30,
    }
    options.update(config.ytdlp.from_config)
    options.update(flag_options(config))
    options.update(config.ytdlp.from_option)
    options.update({
        "outtmpl": {"default": outtmpl},
        "continuedl": True,  # resume a .part file with a Range request
        "updatetime": False,  # keep our own mtime, which info.json records
        "noplaylist": True,
        "noprogress": True,
        "quiet": True,
        "no_warnings": False,
        "logger": logger,
        "progress_hooks": hooks,
    })
    return options


def flag_options(config: DownloadConfig) -> dict[str, Any]:
    """The YoutubeDL parameters wtours' own flags set, validated (call it before any transfer)."""
    from yt_dlp.utils import parse_bytes

    options: dict[str, Any] = {}
    if config.retries is not None:
        options.update(retries=config.retries, fragment_retries=config.retries,
                       extractor_retries=min(config.retries, 3))
    if config.rate_limit:
        rate = parse_bytes(config.rate_limit)
        if rate is None:
            raise UsageError(f"--rate-limit {config.rate_limit!r} is not a rate",
                             "use bytes per second, e.g. 500K or 5M")
        options["ratelimit"] = rate
    if config.cookies:
        if not Path(config.cookies).is_file():
            raise UsageError(f"cookies file {config.cookies} not found",
                             "export cookies.txt (Netscape format) from a logged-in browser")
        options["cookiefile"] = config.cookies
    if config.cookies_from_browser:
        options["cookiesfrombrowser"] = (config.cookies_from_browser,)
    return options


def _explain(message: str, warnings: list[str], config: DownloadConfig, retries: int | None = None) -> WtoursError:
    """Turn a yt-dlp failure into an error that names the fix (`retries`: as yt-dlp was given them)."""
    retries = retries if retries is not None else config.retries if config.retries is not None else DEFAULT_RETRIES
    text = " ".join([message, *warnings]).lower()
    short = message.replace("ERROR: ", "").strip()
    if "not a bot" in text or "sign in to confirm" in text or "cookies" in text and "sign in" in text:
        return WtoursError(f"YouTube refused the download: {short}", COOKIES_HINT + MIRROR_HINT)
    if "javascript runtime" in text or "challenge solver" in text:
        return WtoursError(f"yt-dlp could not solve YouTube's challenge: {short}", JS_HINT)
    if "requested format is not available" in text:
        return WtoursError(f"no video stream of at most {config.max_height}p: {short}",
                           "raise --max-height, or run with -v to see the formats offered")
    network = ("unable to download", "connection refused", "timed out", "network is unreachable", "name resolution",
               "urlopen error", "connection reset", "remote end closed", "failed to resolve", "giving up after")
    if any(word in text for word in network):
        return WtoursError(f"network failure after {retries} retries: {short}",
                           "check the connection (or proxy) and rerun: a partial download resumes where it stopped")
    if "no space left" in text:
        return WtoursError(f"disk full: {short}",
                           "free space under the data root or pass another --root; a rerun resumes")
    return WtoursError(f"download failed: {short}", "rerun with -v for yt-dlp's full log; " + MIRROR_HINT)


class _ProgressBar:
    """One tqdm bar per video, fed by yt-dlp's progress hook (size, speed and ETA)."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled = label, enabled
        self.bar: Any = None  # a tqdm bar, made at the first progress report

    def hook(self, status: dict) -> None:
        if not self.enabled or status.get("status") not in ("downloading", "finished"):
            return
        total = status.get("total_bytes") or status.get("total_bytes_estimate")
        done = status.get("downloaded_bytes") or 0
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024, desc=self.label)
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _check_disk(info: dict[str, Any], folder: Path) -> None:
    formats = info.get("requested_formats") or [info]
    sizes = [f.get("filesize") or f.get("filesize_approx") for f in formats]
    if not all(sizes):
        return
    needed = int(sum(sizes) * DISK_MARGIN)
    have_partial = sum(p.stat().st_size for p in folder.glob("*.part"))
    free = shutil.disk_usage(folder).free
    if needed - have_partial > free:
        raise WtoursError(
            f"not enough free disk for {info.get('id', 'the video')}: it needs {needed / 1e9:.1f} GB, "
            f"{free / 1e9:.1f} GB are free under {folder}",
            "free space, or pass --root on a larger disk (or lower --max-height)")


def _describe_pick(info: dict[str, Any], config: DownloadConfig, entry: VideoEntry | None) -> str:
    picked = info.get("requested_formats") or [info]
    video = next((f for f in picked if f.get("vcodec") not in (None, "none")), picked[0])
    heights = [f.get("height") for f in info.get("formats") or [] if f.get("height") and f.get("vcodec") != "none"]
    best = max(heights) if heights else None
    if not video.get("height"):
        return (f"picked format {video.get('format_id')} ({video.get('ext')}): a direct file whose resolution "
                "the source does not state; it is probed after download")
    text = (f"picked format {video.get('format_id')}: {video.get('width')}x{video.get('height')} "
            f"{video.get('vcodec') or '?'} ({video.get('ext')}, {video.get('fps') or '?'} fps), "
            f"the best video stream up to {config.max_height}p")
    if best and best < config.max_height:
        text += f"; the source offers at most {best}p"
    stated = (entry.stated.get("height") if entry else None)
    if stated and video.get("height") and video["height"] < min(stated, config.max_height):
        text += (f". WARNING: the corpus states {stated}p; YouTube may be hiding formats from this client "
                 f"({JS_HINT}; and cookies may help)")
    return text


def download(target: DownloadTarget, config: DownloadConfig, say: Callable[[str], None] = print) -> DownloadResult:
    """Fetch one video with yt-dlp into <root>/videos/<slug>/, resumably, then verify and record it."""
    layout = Layout(config.root)
    folder = layout.video_dir(target.slug)
    done = completed_file(layout, target.slug, rehash=config.verify)
    if done is not None:
        say(f"{target.slug}: already downloaded and verified ({done}); skipping")
        return DownloadResult(target.slug, done, "skipped", layout.read_info(target.slug) or {})
    media.find_tools()  # fail before any transfer when ffmpeg is missing: we cannot verify without it
    # one writer per video folder: two downloads (or a download and an add) would share the .part file
    with folder_lock(folder, f"video folder of {target.slug}"):
        return _download_locked(layout, target, config, say)


def _download_locked(layout: Layout, target: DownloadTarget, config: DownloadConfig,
                     say: Callable[[str], None]) -> DownloadResult:
    import yt_dlp

    folder = layout.video_dir(target.slug)
    logger = _YtdlpLogger()
    bar = _ProgressBar(target.slug, config.progress)
    options = _ytdlp_options(config, str(layout.download_template(target.slug)), logger, [bar.hook])
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(target.url, download=False)
            say(f"{target.slug}: {_describe_pick(info, config, target.entry)}")
            _check_disk(info, folder)
            info = ydl.process_ie_result(info, download=True)
    except yt_dlp.utils.DownloadError as e:
        raise _explain(str(e), logger.warnings, config, options["retries"]) from e
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise _explain("No space left on device", [], config, options["retries"]) from e
        raise
    finally:
        bar.close()
    path = Path(info["requested_downloads"][0]["filepath"])
    try:
        probed = probe_and_verify(path)
    except media.ProbeError as e:
        raise _reject(path, e) from e
    source = _source_record(info, target, config.ytdlp)
    record = write_info(layout, target.slug, path, probed, source, target.entry)
    say(f"{target.slug}: {path} ({record['bytes'] / 1e6:.1f} MB, {probed.width}x{probed.height}, "
        f"{probed.fps:.2f} fps, {probed.duration / 60:.1f} min, sha256 {record['sha256'][:12]}…)")
    return DownloadResult(target.slug, path, "downloaded", record)


def _source_record(info: dict[str, Any], target: DownloadTarget, settings: YtdlpSettings) -> dict[str, Any]:
    import yt_dlp

    picked = info.get("requested_formats") or [info]
    video = next((f for f in picked if f.get("vcodec") not in (None, "none")), picked[0])
    entry = target.entry
    return {
        "type": "url",
        "url": target.url,
        "webpage_url": info.get("webpage_url"),
        "id": info.get("id") if info.get("extractor_key") != "Generic" else target.source_id,
        "extractor": info.get("extractor_key"),
        "title": info.get("title"),
        "uploader": info.get("uploader") or info.get("channel"),
        "channel_url": info.get("channel_url") or info.get("uploader_url"),
        "upload_date": info.get("upload_date"),
        "license": info.get("license") or (entry.license if entry else None),
        "format": {k: video.get(k) for k in ("format_id", "ext", "vcodec", "acodec", "width", "height", "fps", "tbr")},
        "yt_dlp": yt_dlp.version.__version__,
        # which of the user's yt-dlp settings shaped the download (names only: values may be secrets)
        "yt_dlp_options": settings.origin(),
    }


# ---------------------------------------------------------------- local files

PROVENANCE_KEYS = ("url", "title", "uploader", "license")  # what `wtours add` records for attribution
_MAX_TEXT = {"url": 2048, "title": 300, "uploader": 200, "license": 100}
_OPTION_OF = {"url": "--source-url", "title": "--title", "uploader": "--uploader", "license": "--license"}


def validate_provenance(provenance: dict[str, str | None]) -> dict[str, str]:
    """The given attribution fields, checked: an http(s) URL with a host; single-line printable text of a
    sensible length (it lands in a table of the dataset card). A licence is an SPDX id (CC-BY-4.0) or a
    short text ("Creative Commons Attribution license (reuse allowed)", as YouTube states it)."""
    from urllib.parse import urlsplit

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
              provenance: dict[str, str | None] | None = None) -> DownloadResult:
    """Register a video file already on disk (e.g. from the figshare mirror) as <root>/videos/<name>/.

    A file that probes but does not decode to its end is refused unless `allow_damaged`: then it is
    recorded with the reason, and `wtours shard` keeps what decodes. A name that is already registered
    to another file is refused unless `force` (with --mode move the earlier file may be the user's only
    copy); the only file ever deleted is the one the user named, and only with --mode move.

    `provenance` (keys of PROVENANCE_KEYS: source page URL, title, uploader, licence) is recorded under
    'source' for the dataset card's attribution; re-adding keeps the fields recorded before unless given
    anew (corpus videos start from the manifest's URL and licence)."""
    slug = validate_slug(name)
    given = validate_provenance(provenance or {})
    source_path = Path(path).expanduser().resolve()
    if not source_path.is_file():
        raise UsageError(f"{path} does not exist or is not a file", "give the path of a video file")
    layout = Layout(root)
    _refuse_replacing(layout, slug, source_path, force)  # at once, before the decode check
    probed = media.probe(source_path)
    damaged = None
    try:
        media.verify_decodes(source_path, probed.duration)
    except media.ProbeError as e:
        if not allow_damaged:
            e.hint = (e.hint or "") + "; or register it anyway with --allow-damaged (shard keeps what decodes)"
            raise
        damaged = e.message
        say(f"{slug}: warning: {damaged}; registering it anyway (--allow-damaged)")
    with folder_lock(layout.video_dir(slug), f"video folder of {slug}"):
        current = _refuse_replacing(layout, slug, source_path, force)  # again, under the lock
        return _add_locked(layout, slug, source_path, mode, probed, damaged, say, current, given)


def _refuse_replacing(layout: Layout, slug: str, source_path: Path, force: bool) -> Path | None:
    current = _registered_elsewhere(layout, slug, source_path)
    if current is not None and not force:
        raise UsageError(
            f"{slug!r} is already registered under {layout.root} (as {current}); nothing was changed",
            f"choose another --name, or pass --force to replace the registered video with {source_path}"
            + (" (the earlier file in the data root is then replaced)" if current.exists() else ""))
    return current


def _registered_elsewhere(layout: Layout, slug: str, source_path: Path) -> Path | None:
    """The file registered as `slug` when it is not `source_path` itself (re-adding the same file is harmless)."""
    existing = layout.read_info(slug)
    if not existing or not existing.get("file"):
        return None
    current = layout.video_file(slug, existing["file"])
    try:
        if current.resolve() == source_path or (current.exists() and os.path.samefile(current, source_path)):
            return None
    except OSError:
        pass
    if source_path.stat().st_size == existing.get("bytes") and sha256_file(source_path) == existing.get("sha256"):
        return None  # the same video again (e.g. a copy): nothing is lost by registering it anew
    return current


def _add_locked(layout: Layout, slug: str, source_path: Path, mode: str, probed: media.ProbeResult,
                damaged: str | None, say: Callable[[str], None], current: Path | None,
                given: dict[str, str]) -> DownloadResult:
    folder = layout.video_dir(slug)
    folder.mkdir(parents=True, exist_ok=True)
    final = layout.added_video_path(slug, source_path.suffix)
    earlier = _earlier_provenance(layout, slug)  # read before anything is replaced
    if current is not None:
        say(f"{slug}: replacing the registered video {current.name} (--force)")
    _place(source_path, final, mode)
    entry = load_manifest().get(slug)
    source = {"type": "local", "path": str(source_path), "url": entry.url if entry else None,
              "id": entry.youtube_id if entry else None, "title": None, "uploader": None, "channel_url": None,
              "license": entry.license if entry else None}
    kept = {k: v for k, v in earlier.items() if k not in given and source.get(k) != v}
    source.update(kept)
    source.update(given)
    if any(k in _OPTION_OF for k in kept):
        say(f"{slug}: keeping the recorded {', '.join(sorted(kept))} "
            f"(give {', '.join(_OPTION_OF[k] for k in sorted(kept) if k in _OPTION_OF)} to change)")
    record = write_info(layout, slug, final, probed, source, entry, damaged=damaged)
    say(f"{slug}: added {final} ({probed.width}x{probed.height}, {probed.fps:.2f} fps, {probed.duration:.1f} s)")
    return DownloadResult(slug, final, "added", record)


def _earlier_provenance(layout: Layout, slug: str) -> dict[str, Any]:
    """The attribution recorded for `slug` before (by an earlier add or a download), to keep on re-adding."""
    try:
        info = layout.read_info(slug) or {}
    except WtoursError:
        return {}  # a damaged info.json is replaced anyway
    raw = info.get("source")
    source: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return {k: source[k] for k in (*PROVENANCE_KEYS, "channel_url", "id") if source.get(k)}


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
        try:
            os.link(source, tmp)
            return
        except OSError:
            pass  # another filesystem: fall back to a copy
    shutil.copyfile(source, tmp)
