"""`wtours download`: yt-dlp fetches a corpus video (or any URL) into the data root, resumable and verified,
with yt-dlp's record of where it came from (provenance) in info.json."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wtours import media
from wtours.config import Range, option
from wtours.errors import UsageError, WtoursError
from wtours.fetch.ytdlp_options import YtdlpSettings
from wtours.layout import Layout, validate_slug
from wtours.locks import folder_lock
from wtours.manifest import VideoEntry, load_manifest
from wtours.redact import shown
from wtours.video import completed_file, write_video_info

log = logging.getLogger(__name__)

MIRROR_HINT = ("; the corpus videos are also mirrored on figshare ({url}): download the video's file there (mp4, mkv "
               "or a zip of one) and register it with `wtours add FILE --name {slug} --mirror`")
COOKIES_HINT = ("YouTube asks to sign in ('confirm you're not a bot'): pass cookies from a browser that is logged in "
                "to YouTube, `--cookies cookies.txt` (Netscape format) or `--cookies-from-browser firefox`")
JS_HINT = ("yt-dlp needs a JavaScript runtime for full YouTube support: install deno (https://deno.com) and "
           "`pip install yt-dlp-ejs`, then rerun")
DISK_MARGIN = 1.02  # keep 2% headroom over the announced size
DEFAULT_RETRIES = 10  # yt-dlp's command line default (its Python API has 0)


@dataclass(frozen=True)
class DownloadConfig:
    root: Path
    # The settings `wtours download` derives its options from (wtours/config.py).
    max_height: int = option(2160, "Best video stream up to this height, any codec.", range=Range(144, 4320))
    retries: int | None = option(None, "Retries per request (default: 10, or your yt-dlp config's).",
                                 range=Range(0, 1000))  # None: the user's yt-dlp config's, else DEFAULT_RETRIES
    rate_limit: str | None = option(None, "Bytes per second, e.g. 5M.", metavar="RATE")
    cookies: str | None = option(None, "cookies.txt (Netscape format) for YouTube's sign-in check.", metavar="FILE")
    cookies_from_browser: str | None = option(None, "Take cookies from a browser (firefox, chrome, ...).",
                                              metavar="BROWSER")
    verify: bool = option(False, "Re-hash completed files instead of trusting size and mtime.")
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


@dataclass(frozen=True)
class DownloadResult:
    slug: str
    path: Path
    status: str  # "downloaded", "skipped" or "added"


def resolve_targets(cities: tuple[str, ...], all_videos: bool, url: str | None,
                    name: str | None) -> list[DownloadTarget]:
    manifest = load_manifest()
    if url or name:
        if not (url and name):
            raise UsageError("--url and --name go together",
                              "e.g. `wtours download --url https://host/walk.mp4 --name my-walk`")
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--url {shown(url)!r} is not an http(s) URL",
                             "for a file on disk use `wtours add PATH --name NAME`")
        return [DownloadTarget(validate_slug(name), url, None, manifest.get(name))]
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
    return [{"slug": t.slug, "id": t.source_id, "url": t.url, "target": str(layout.video_path(t.slug, "<ext>")),
             "format": config.ytdlp.from_option.get("format") or format_selector(config.max_height),
             "yt_dlp": settings, "complete": completed_file(layout, t.slug) is not None} for t in targets]


def format_selector(max_height: int) -> str:
    """Best video stream up to max_height whatever its codec (YouTube has 2160p only as VP9/AV1).

    `height<=?` also admits formats of unknown height (direct file links)."""
    return f"bv*[height<=?{max_height}]/b[height<=?{max_height}]"


# ---------------------------------------------------------------- yt-dlp


class _YtdlpLogger:
    """Routes yt-dlp's messages to logging and remembers warnings for error hints."""

    debug = error = log.debug  # an error is surfaced through the raised DownloadError instead
    info = log.info

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, msg: str) -> None:
        self.warnings.append(msg)
        log.warning(msg)


def _ytdlp_options(config: DownloadConfig, outtmpl: str, logger: _YtdlpLogger,
                   hooks: list[Callable[[dict], None]]) -> dict[str, Any]:
    """Layered, later wins, as wtours/fetch/ytdlp_options.py says: last the options that carry wtours' contract."""
    return {
        "format": format_selector(config.max_height),
        "retries": DEFAULT_RETRIES,  # the Python API defaults to 0 retries (the CLI to 10)
        "fragment_retries": DEFAULT_RETRIES,
        "extractor_retries": 3,
        "file_access_retries": 3,
        "socket_timeout": 30,
        **config.ytdlp.from_config,
        **flag_options(config),
        **config.ytdlp.from_option,
        "outtmpl": {"default": outtmpl},
        "continuedl": True,  # resume a .part file with a Range request
        "updatetime": False,  # keep our own mtime, which info.json records
        "noplaylist": True,
        "noprogress": True,
        "quiet": True,
        "no_warnings": False,
        "logger": logger,
        "progress_hooks": hooks,
    }


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


# yt-dlp's warning before each retry ("... Retrying (2/3)...", or "... Retrying fragment 4 (2/10)..."): the retry
# made and the most it allows for that request, which differ by stage (--retries per download request,
# extractor_retries when reading the page), so the number given up after is the one counted here.
_RETRY_WARNING = re.compile(r"Retrying\b[^()]*\((\d+)/\d+\)")


def retries_made(warnings: list[str]) -> int:
    """The retries yt-dlp made of the request it gave up on: the last retry warning's count (0 where none)."""
    counts = [int(m.group(1)) for w in warnings for m in [_RETRY_WARNING.search(w)] if m]
    return counts[-1] if counts else 0


def mirror_hint(corpus_slug: str | None) -> str:
    """How to get corpus video `corpus_slug` without YouTube (nothing for another video: the mirror lacks it)."""
    return MIRROR_HINT.format(url=load_manifest().mirror.url, slug=corpus_slug) if corpus_slug else ""


def _explain(message: str, warnings: list[str], config: DownloadConfig, corpus_slug: str | None = None) -> WtoursError:
    """Turn a yt-dlp failure into an error that names the fix (`corpus_slug`: the corpus video it was, which the
    figshare mirror also serves)."""
    mirror = mirror_hint(corpus_slug)
    text = " ".join([message, *warnings]).lower()
    short = message.replace("ERROR: ", "").strip()
    if "not a bot" in text or "sign in to confirm" in text or "cookies" in text and "sign in" in text:
        return WtoursError(f"YouTube refused the download: {short}", COOKIES_HINT + mirror)
    if "javascript runtime" in text or "challenge solver" in text:
        return WtoursError(f"yt-dlp could not solve YouTube's challenge: {short}", JS_HINT)
    if "requested format is not available" in text:
        return WtoursError(f"no video stream of at most {config.max_height}p: {short}",
                           "raise --max-height, or run with -v to see the formats offered")
    network = ("unable to download", "connection refused", "timed out", "network is unreachable", "name resolution",
               "urlopen error", "connection reset", "remote end closed", "failed to resolve", "giving up after")
    if any(word in text for word in network):
        retries = retries_made(warnings)
        tried = f"after {retries} {'retry' if retries == 1 else 'retries'}" if retries else "without a retry"
        return WtoursError(f"network failure ({tried} by yt-dlp): {short}",
                           "check the connection (or proxy) and rerun: a partial download resumes where it stopped"
                           + mirror)
    if "no space left" in text:
        return WtoursError(f"disk full: {short}",
                           "free space under the data root or pass another --root; a rerun resumes")
    return WtoursError(f"download failed: {short}", "rerun with -v for yt-dlp's full log" + mirror)


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


def _video_format(info: dict[str, Any]) -> dict[str, Any]:
    """The format of the video stream yt-dlp picked (of a video+audio pair, or the one format)."""
    picked = info.get("requested_formats") or [info]
    return next((f for f in picked if f.get("vcodec") not in (None, "none")), picked[0])


def _describe_pick(info: dict[str, Any], config: DownloadConfig, entry: VideoEntry | None) -> str:
    video = _video_format(info)
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
        return DownloadResult(target.slug, done, "skipped")
    media.find_tools()  # fail before any transfer when ffmpeg is missing: we cannot verify without it
    # one writer per video folder: two downloads (or a download and an add) would share the .part file
    with folder_lock(folder, f"video folder of {target.slug}"):
        import yt_dlp

        corpus_slug = target.entry.slug if target.entry else None
        logger = _YtdlpLogger()
        bar = _ProgressBar(target.slug, config.progress)
        options = _ytdlp_options(config, str(layout.video_path(target.slug, "%(ext)s")), logger, [bar.hook])
        try:
            with yt_dlp.YoutubeDL(options) as ydl:
                info = ydl.extract_info(target.url, download=False)
                say(f"{target.slug}: {_describe_pick(info, config, target.entry)}")
                _check_disk(info, folder)
                info = ydl.process_ie_result(info, download=True)
        except yt_dlp.utils.DownloadError as e:
            raise _explain(str(e), logger.warnings, config, corpus_slug) from e
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise _explain("No space left on device", [], config, corpus_slug) from e
            raise
        finally:
            bar.close()
        path = Path(info["requested_downloads"][0]["filepath"])
        try:
            probed = media.probe(path)
            media.verify_decodes(path, probed.duration)
        except media.ProbeError as e:
            if path.exists():  # moved off its final name, kept for inspection
                rejected = Layout.rejected_path(path)
                os.replace(path, rejected)
                e.message += f" (kept as {rejected.name} for inspection)"
            raise
        record = write_video_info(layout, target.slug, path, probed, _source_record(info, target, config.ytdlp),
                                  target.entry)
        say(f"{target.slug}: {path} ({record.bytes / 1e6:.1f} MB, {probed.width}x{probed.height}, "
            f"{probed.fps:.2f} fps, {probed.duration / 60:.1f} min, sha256 {record.sha256[:12]}…)")
        return DownloadResult(target.slug, path, "downloaded")


def _source_record(info: dict[str, Any], target: DownloadTarget, settings: YtdlpSettings) -> dict[str, Any]:
    import yt_dlp

    video = _video_format(info)
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
