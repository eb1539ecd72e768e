"""Which yt-dlp options a download uses: wtours' own, the user's yt-dlp config, and --yt-dlp-option.

yt-dlp users keep settings in a config file (~/.config/yt-dlp/config, $XDG_CONFIG_HOME/yt-dlp/config,
~/yt-dlp.conf, /etc/yt-dlp.conf, ...: a proxy, cookies, a rate limit, extractor arguments). wtours reads
it the way yt-dlp does (yt-dlp's own parser), so a download behaves as the user's yt-dlp would.

Precedence, later wins: wtours' defaults < the user's yt-dlp config < wtours flags given on the command
line (--rate-limit, --retries, --cookies, ...) < --yt-dlp-option KEY=VALUE. The options that carry
wtours' contract (where the file goes, resuming from a .part file, exactly one video, no
post-processing, wtours' progress and log) are always wtours' own: taken from the config they are
reported as not applied, with the reason; given as --yt-dlp-option they are refused."""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from wtours.errors import UsageError
from wtours.redact import redact_option

_WHERE = "wtours decides where the video goes, <root>/videos/<slug>/, and its name"
_RESUME = "a download resumes from its .part file and never writes a partial file under its final name"
_ONE = "wtours fetches exactly the one video you named"
_OUTPUT = "wtours shows its own progress and messages, see -q and -v"
_FETCH = "wtours needs the video downloaded, not listed or printed"
_AS_SERVED = "the video is kept as the source serves it, so its checksum and provenance match"
_FOLDER = "the video folder holds the video and wtours' info.json only"
_SKIP = "a filter or archive would skip the video you named without an error"

# YoutubeDL parameters that carry wtours' contract, and why.
OWNED: dict[str, str] = {
    **dict.fromkeys(("outtmpl", "paths", "outtmpl_na_placeholder", "restrictfilenames", "windowsfilenames",
                     "trim_file_name", "autonumber_size", "autonumber_start"), _WHERE),
    **dict.fromkeys(("continuedl", "nopart", "overwrites", "external_downloader", "external_downloader_args"),
                    _RESUME),
    "updatetime": "info.json records the file's own modification time",
    **dict.fromkeys(("noplaylist", "extract_flat", "playliststart", "playlistend", "playlistreverse",
                     "playlistrandom", "lazy_playlist", "playlist_items", "download_ranges",
                     "force_keyframes_at_cuts"), _ONE),
    **dict.fromkeys(("logger", "progress_hooks", "postprocessor_hooks", "quiet", "noprogress", "no_warnings",
                     "verbose", "progress_with_newline", "progress_template", "progress_delta", "consoletitle",
                     "logtostderr", "color"), _OUTPUT),
    **dict.fromkeys(("simulate", "skip_download", "forceprint", "print_to_file", "forcejson", "dump_single_json",
                     "forceurl", "forcetitle", "forceid", "forcethumbnail", "forcedescription", "forceduration",
                     "forcefilename", "forceformat", "listformats", "listformats_table", "list_thumbnails",
                     "listsubtitles", "load_pages", "test"), _FETCH),
    **dict.fromkeys(("postprocessors", "final_ext", "keepvideo", "merge_output_format", "fixup"), _AS_SERVED),
    **dict.fromkeys(("writeinfojson", "writethumbnail", "write_all_thumbnails", "writedescription",
                     "writesubtitles", "writeautomaticsub", "allsubtitles", "writelink", "writeurllink",
                     "writewebloclink", "writedesktoplink", "getcomments", "write_pages", "allow_playlist_files",
                     "clean_infojson"), _FOLDER),
    **dict.fromkeys(("download_archive", "force_write_download_archive", "break_on_existing", "break_on_reject",
                     "break_per_url", "max_downloads", "match_filter", "daterange", "min_filesize", "max_filesize",
                     "min_views", "max_views", "matchtitle", "rejecttitle", "age_limit", "ignoreerrors",
                     "skip_playlist_after_errors"), _SKIP),
}
# Taken from --yt-dlp-option (the user asked for it by name), but not from a config file written for
# other uses of yt-dlp (e.g. `-f bestaudio` for music): wtours picks the best video up to --max-height.
FORMAT_KEYS: dict[str, str] = {"format": "wtours picks the best video stream up to --max-height, "
                                         "and --yt-dlp-option format=... another"}
# yt-dlp's bookkeeping, not settings of the user's.
_INTERNAL = frozenset({"_warnings", "_deprecation_warnings", "compat_opts", "warn_when_outdated"})
# Sizes yt-dlp's command line takes as 50K / 4.2M: --yt-dlp-option accepts the same.
_BYTE_KEYS = frozenset({"ratelimit", "throttledratelimit", "http_chunk_size", "buffersize"})
# wtours' own flags and the YoutubeDL parameters they set: both at once is a contradiction.
FLAG_KEYS: dict[str, tuple[str, ...]] = {
    "--rate-limit": ("ratelimit",), "--retries": ("retries", "fragment_retries"),
    "--cookies": ("cookiefile",), "--cookies-from-browser": ("cookiesfrombrowser",),
}

FROM_CONFIG = "yt-dlp config"
FROM_OPTION = "--yt-dlp-option"


@dataclass(frozen=True)
class YtdlpSettings:
    """The user's share of a download's yt-dlp options, and what was left out and why."""

    from_config: dict[str, Any] = field(default_factory=dict)  # the config's options wtours applies
    from_option: dict[str, Any] = field(default_factory=dict)  # --yt-dlp-option KEY=VALUE
    not_applied: dict[str, str] = field(default_factory=dict)  # config key -> why wtours keeps its own
    config_files: tuple[str, ...] = ()  # the files yt-dlp read
    config_ignored: bool = False  # --ignore-yt-dlp-config

    def origin(self) -> dict[str, str]:
        """Each applied key and where it came from (no values: they may be secrets or local paths)."""
        return {**dict.fromkeys(self.from_config, FROM_CONFIG), **dict.fromkeys(self.from_option, FROM_OPTION)}

    def describe(self) -> list[str]:
        """Lines that say what was applied from where, and what was not and why."""
        lines = []
        files = ", ".join(self.config_files) or "yt-dlp's config"
        if self.config_ignored:
            lines.append("yt-dlp: your yt-dlp config is not read (--ignore-yt-dlp-config)")
        if self.from_config:
            lines.append(f"yt-dlp: applied from {files}: {_listing(self.from_config)}")
        if self.not_applied:
            reasons: dict[str, list[str]] = {}
            for key, why in self.not_applied.items():
                reasons.setdefault(why, []).append(key)
            lines.append(f"yt-dlp: not applied from {files}: "
                         + "; ".join(f"{', '.join(keys)}: {why}" for why, keys in reasons.items()))
        if self.from_option:
            lines.append(f"yt-dlp: applied from --yt-dlp-option: {_listing(self.from_option)}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """For --dry-run --json: values shown as in describe() (secrets hidden)."""
        return {"config_files": list(self.config_files), "config_ignored": self.config_ignored,
                "applied": {k: {"value": redact_option(k, v), "from": FROM_CONFIG} for k, v in self.from_config.items()}
                | {k: {"value": redact_option(k, v), "from": FROM_OPTION} for k, v in self.from_option.items()},
                "not_applied": dict(self.not_applied)}


def load_settings(read_config: bool = True, options: Sequence[str] = (),
                  flags_given: Sequence[str] = ()) -> YtdlpSettings:
    """The user's yt-dlp config (unless `read_config` is false) and the --yt-dlp-option items, validated.

    `flags_given`: wtours flags on the command line (e.g. "--rate-limit"); a --yt-dlp-option that sets
    the same parameter is refused as a contradiction."""
    from_option = parse_option_items(options, flags_given)
    if not read_config:  # not even parsed: a broken config is a reason to pass --ignore-yt-dlp-config
        return YtdlpSettings(from_option=from_option, config_ignored=True)
    configured, files = _config_files_read()
    not_applied = {key: OWNED.get(key) or FORMAT_KEYS[key] for key in configured if key in OWNED or key in FORMAT_KEYS}
    from_config = {key: value for key, value in configured.items() if key not in not_applied}
    return YtdlpSettings(from_config, from_option, not_applied, tuple(files))


# ---------------------------------------------------------------- the user's config, read by yt-dlp


def defaults() -> dict[str, Any]:
    """YoutubeDL parameters as yt-dlp's command line sets them with no options and no config."""
    return _parse([])


def _config_files_read() -> tuple[dict[str, Any], list[str]]:
    """The parameters the user's yt-dlp config files change from yt-dlp's defaults, and those files.

    yt-dlp's public parser (`yt_dlp.parse_options`) reads the config files only for its own command line (an explicit
    argv means "ignore config"); it is run on an empty command line instead, exactly as a bare `yt-dlp` run would read
    them: portable, home, user ($XDG_CONFIG_HOME/yt-dlp/config, ~/.config/yt-dlp/..., ~/yt-dlp.conf...) and system
    files, --config-locations inside them, --ignore-config. The files are the ones its --verbose run names."""
    files = _config_files_named()
    with _command_line():
        configured = _parse(None, files)
    base = defaults()
    return {k: v for k, v in configured.items() if k not in _INTERNAL and base.get(k) != v}, files


# How yt-dlp's --verbose run names a config file it read: `[debug] User config "PATH": [...]` (nested ones
# prefixed by `| `).
_CONFIG_LINE = re.compile(r'^\[debug\] (?:\| )*(?:[\w-]+ )?[Cc]onfig "(?P<path>.+)": \[')


def _config_files_named() -> list[str]:
    """The config files yt-dlp reads for a bare command line, in order, as its --verbose run lists them
    (printed also when a file does not parse: its failure is reported by `_parse`, naming these files)."""
    import yt_dlp

    printed = io.StringIO()
    with _command_line("--verbose"), contextlib.redirect_stderr(printed), \
            contextlib.suppress(SystemExit, Exception):
        yt_dlp.parse_options()
    found = (_CONFIG_LINE.match(line) for line in printed.getvalue().splitlines())
    return list(dict.fromkeys(m["path"] for m in found if m))


@contextlib.contextmanager
def _command_line(*args: str) -> Iterator[None]:
    """sys.argv as for `yt-dlp ARGS` in the block (yt-dlp reads config files for its own command line only)."""
    saved = sys.argv[:]
    sys.argv[:] = ["yt-dlp", *args]
    try:
        yield
    finally:
        sys.argv[:] = saved


def _parse(argv: list[str] | None, files: Sequence[str] = ()) -> dict[str, Any]:
    """yt-dlp's parser run on `argv` (None: sys.argv); its usage errors (it calls sys.exit) become a WtoursError."""
    import optparse

    import yt_dlp

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return yt_dlp.parse_options(argv).ydl_opts
    except (SystemExit, optparse.OptParseError, ValueError) as e:
        text = str(e) if not isinstance(e, SystemExit) else stderr.getvalue() or f"exit status {e.code}"
        text = " ".join(text.rpartition("error: ")[2].split())  # optparse's own message, without its usage line
        where = f" ({', '.join(files)})" if files else ""
        raise UsageError(f"yt-dlp cannot parse your yt-dlp config{where}: {text}",
                         "fix the file (yt-dlp itself would refuse it too), or pass --ignore-yt-dlp-config") from e


# ---------------------------------------------------------------- --yt-dlp-option KEY=VALUE


def parse_option_items(items: Sequence[str], flags_given: Sequence[str] = ()) -> dict[str, Any]:
    """KEY=VALUE items as YoutubeDL parameters: a known key, a value of its type; never an owned key."""
    known = defaults()
    taken = {key: flag for flag in flags_given for key in FLAG_KEYS.get(flag, ())}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--yt-dlp-option {item!r} is not KEY=VALUE",
                             "e.g. --yt-dlp-option proxy=socks5://127.0.0.1:1080 (YoutubeDL parameter names)")
        if key in OWNED:
            raise UsageError(f"--yt-dlp-option {key}: wtours sets {key} itself ({OWNED[key]})",
                             "drop this option; wtours' own flags (see `wtours download --help`) cover the rest")
        if key not in known or key in _INTERNAL:
            raise UsageError(f"--yt-dlp-option {key}: not a YoutubeDL parameter", _suggest(key, known))
        if key in taken:
            raise UsageError(f"--yt-dlp-option {key} contradicts {taken[key]}", "pass one of them, not both")
        out[key] = _value(key, text.strip(), known[key])
    return out


def _suggest(key: str, known: dict[str, Any]) -> str:
    wanted = key.lstrip("-").replace("-", "_").lower()
    names = [k for k in known if k not in OWNED and k not in _INTERNAL]
    close = difflib.get_close_matches(wanted, names, n=3, cutoff=0.6)
    mention = f"did you mean {', '.join(close)}? " if close else ""
    return (f"{mention}KEY is a YoutubeDL parameter name (as in yt-dlp's Python API: ratelimit, proxy, "
            "http_headers, extractor_args, ...), not a command-line flag")


def _value(key: str, text: str, default: Any) -> Any:
    """VALUE as JSON (numbers, true/false, objects, lists) where it parses, else as a string; sizes as
    yt-dlp's command line writes them (50K, 4.2M) for the byte-valued parameters."""
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    if key in _BYTE_KEYS and isinstance(value, str):
        from yt_dlp.utils import parse_bytes

        parsed = parse_bytes(value)
        if parsed is None:
            raise UsageError(f"--yt-dlp-option {key}={text}: not a size", "bytes, or with a suffix: 500K, 5M")
        value = parsed
    expected = (int,) if key in _BYTE_KEYS else (bool,) if isinstance(default, bool) else (int,) \
        if isinstance(default, int) else (int, float) if isinstance(default, float) else (dict,) \
        if isinstance(default, dict) else None
    if expected and (not isinstance(value, expected) or (bool not in expected and isinstance(value, bool))):
        kind = {bool: "true or false", int: "an integer", dict: "a JSON object"}.get(expected[0], "a number")
        raise UsageError(f"--yt-dlp-option {key}={text}: {key} takes {kind}",
                         f"e.g. --yt-dlp-option {key}={_example(default)}")
    return value


def _example(default: Any) -> str:
    return json.dumps(default if default not in (None, {}) else {"User-Agent": "..."}
                      if isinstance(default, dict) else default)


# ---------------------------------------------------------------- showing values


def _listing(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(redact_option(k, v), default=str)}" for k, v in options.items())
