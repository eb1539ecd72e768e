"""The one redactor. A user's SPEC (a shard path or URL, a pipe: command) is shown, logged, stored and
published only as `shown(spec)`, built from an allow-list: a URL's scheme, host (and port) and path (braces
and all), a pipe: command's program and the URLs and .tar paths it reads; everything else (userinfo, query
strings, fragments, options, headers, environment assignments) becomes HIDDEN. `scrub` hides those pieces in
an error message about the spec, `unclean_field` finds a value that is not in its shown form (what a push
refuses). `redact` hides known credential forms in free text (yt-dlp options, messages).
A leaf module: the standard library only."""

from __future__ import annotations

import re
import shlex
from typing import Any

HIDDEN = "***"
PIPE = "pipe:"
_SEGMENT = re.compile(r"[\w.~+,@%{}*\[\]:=-]*")  # a path segment (or name) shown as it is: no space, quote, ?, #, &
_HOST = re.compile(r"(?:[\w.-]*|\[[0-9A-Fa-f:.]+\])(?::\d+)?")
_URL = re.compile(r"(?P<scheme>[A-Za-z][\w+.-]*)://(?P<user>[^/?#]*@)?(?P<host>[^/?#]*)(?P<path>[^?#]*)"
                  r"(?P<query>\?[^#]*)?(?P<fragment>#.*)?\Z", re.S)
_PROGRAM = re.compile(r"[\w./+-]+")
_TAR_PATH = re.compile(r"[\w.~/{},*\[\]+-]*\.tar")  # a pipe: command's shard argument: no '=', ':' or '@'


def shown(spec: str) -> str:
    """`spec` as it may be shown, logged, stored or published: its allow-listed parts, the rest HIDDEN.
    Idempotent: shown(shown(x)) == shown(x); a spec with nothing to hide is shown as it is."""
    if spec.startswith(PIPE):
        return redact(_shown_pipe(spec[len(PIPE):]))
    if "://" not in spec:
        return redact("/".join(part if _SEGMENT.fullmatch(part) else HIDDEN for part in spec.split("/")))
    url = _URL.match(spec)
    if url is None:
        return HIDDEN
    host = url["host"] if _HOST.fullmatch(url["host"]) else HIDDEN
    return (f"{url['scheme']}://{HIDDEN + '@' if url['user'] else ''}{host}{shown(url['path'])}"
            f"{'?' + HIDDEN if url['query'] else ''}{'#' + HIDDEN if url['fragment'] else ''}")


def _shown_pipe(command: str) -> str:
    """pipe:PROGRAM *** URL-or-.tar-path ...: the words that name what the command reads, shown."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, ""  # `#` is kept: shown() stays idempotent
    try:
        words = list(lexer)
    except ValueError:  # unbalanced quotes
        return PIPE + HIDDEN
    if not words:
        return PIPE
    kept = [shown(w) for w in words[1:] if "://" in w or (_TAR_PATH.fullmatch(w) and not w.startswith("-"))]
    program = words[0] if _PROGRAM.fullmatch(words[0]) else HIDDEN
    return PIPE + " ".join([program, *([HIDDEN] if len(kept) < len(words) - 1 else []), *kept])


def scrub(text: str, spec: str) -> str:
    """`text` (an error or a command's output about `spec`) with the raw spec, and each piece of it that
    shown(spec) hides (a password, a token, a header's value), replaced."""
    visible = shown(spec)
    text = text.replace(spec, visible)
    for piece in sorted(set(re.split(r"[\s'\"=:@?&/,;|#\\]+", spec)), key=len, reverse=True):
        if len(piece) >= 4 and piece not in visible:  # as a whole word: `exit 3` leaves "exited" alone
            text = re.sub(rf"(?<!\w){re.escape(piece)}(?!\w)", HIDDEN, text)
    return redact(text)


def unclean_field(value: Any, where: str = "") -> str | None:
    """The first field (`where.key[0]`) of JSON-like `value` holding a string that is not in its shown form
    (or a mapping key that is not: then the mapping's field), None when every string is: a publisher's test."""
    if isinstance(value, str):
        return None if shown(value) == value else where
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and shown(key) != key:
            return where or "a key"
        if found := unclean_field(item, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}".lstrip(".")):
            return found
    return None

# Credentials a URL or a shell command may carry: curl -H 'Authorization: Bearer ...', user:password@ (or a
# token as the user, https://TOKEN@host), signed query strings, Hugging Face tokens.
_SECRETS = (
    re.compile(r"(?i)(authorization:\s*(?:bearer\s+|basic\s+|token\s+)?)[^'\"\s]+"),
    re.compile(r"(?i)(\bbearer\s+)[^'\"\s]+"),
    re.compile(r"(://[^/@\s:]+:)[^/@\s]+(?=@)"),
    re.compile(r"(://)[^/@\s:]+(?=@)"),
    re.compile(r"(?i)([?&](?:token|access_token|sig|signature|x-amz-signature|x-amz-credential|"
               r"x-goog-signature|x-goog-credential)=)[^&'\"\s]+"),
    re.compile(r"()\bhf_[A-Za-z0-9]{8,}"),
)

# yt-dlp parameters whose whole value is a secret, and HTTP headers that carry credentials.
SECRET_KEYS = frozenset({"username", "password", "twofactor", "videopassword", "ap_username", "ap_password",
                         "client_certificate_password"})
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})


def redact(text: str) -> str:
    """`text` (a URL, a SPEC, a command, a message) as it may be shown: credentials replaced by HIDDEN."""
    for pattern in _SECRETS:
        text = pattern.sub(lambda m: m.group(1) + HIDDEN, text)
    return text


def redact_option(key: str, value: Any) -> Any:
    """A named setting's value as it may be shown: a secret parameter or header hidden whole, credentials
    inside a string (a proxy URL, a header) hidden."""
    if key.lower() in SECRET_KEYS:
        return HIDDEN
    if isinstance(value, dict):
        headers = key == "http_headers"
        return {k: HIDDEN if headers and str(k).lower() in SECRET_HEADERS else redact_option(str(k), v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_option(key, v) for v in value)
    if isinstance(value, str):
        return redact(value)
    return value
