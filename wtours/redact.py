"""The one redactor: credentials in anything wtours shows of a user's input (a shard URL or pipe: command, a
yt-dlp option, a training setting) are replaced by HIDDEN before it reaches a warning, an error, a log or a
card. A leaf module: the standard library only."""

from __future__ import annotations

import re
from typing import Any

HIDDEN = "***"

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
