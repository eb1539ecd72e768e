"""The corpus manifest: the ten Walking Tours videos, their slugs, aliases and sources."""

from __future__ import annotations

import difflib
import json
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from wtours.errors import UsageError

MANIFEST_FILE = "walking_tours.json"


@dataclass(frozen=True)
class VideoEntry:
    slug: str
    city: str
    kind: str
    youtube_id: str
    url: str
    license: str
    aliases: tuple[str, ...] = ()
    previous_ids: tuple[str, ...] = ()
    note: str = ""
    stated: dict[str, Any] = field(default_factory=dict)
    observed: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Mirror:
    """Where the videos are mirrored besides YouTube (figshare): its page, article number and title."""

    url: str
    figshare_article: int
    title: str


@dataclass(frozen=True)
class Manifest:
    title: str
    paper: str
    videos: tuple[VideoEntry, ...]
    mirror: Mirror

    @property
    def slugs(self) -> list[str]:
        return [v.slug for v in self.videos]

    def get(self, slug: str) -> VideoEntry | None:
        return next((v for v in self.videos if v.slug == slug), None)

    def resolve(self, name: str) -> VideoEntry:
        """Slug, the authors' spelling or an alias -> entry; else an error with a suggestion."""
        wanted = _fold(name)
        choices = {_fold(n): v for v in reversed(self.videos) for n in (v.slug, v.city, *v.aliases)}  # first wins
        if wanted in choices:
            return choices[wanted]
        close = difflib.get_close_matches(wanted, list(choices), n=1, cutoff=0.6)
        suggestion = f"did you mean '{choices[close[0]].slug}'? " if close else ""
        raise UsageError(
            f"unknown city {name!r}",
            f"{suggestion}valid names: {', '.join(self.slugs)} (see `wtours list`); "
            "for another video use `wtours download --url URL --name NAME` or `wtours add PATH --name NAME`",
        )


def _fold(name: str) -> str:
    """Case, separators and accents do not matter: 'Chiang Mai' == 'chiang_mai' == 'chiangmai'."""
    text = unicodedata.normalize("NFKD", name.strip().lower())
    return "".join(ch for ch in text if ch.isalnum())  # combining accents are not alnum


@lru_cache(maxsize=1)
def load_manifest() -> Manifest:
    """Read the manifest shipped in the package (works after a non-editable install too)."""
    text = resources.files("wtours.manifests").joinpath(MANIFEST_FILE).read_text(encoding="utf-8")
    raw = json.loads(text)
    videos = tuple(VideoEntry(**{**v, "aliases": tuple(v.get("aliases", ())),
                                 "previous_ids": tuple(v.get("previous_ids", ()))}) for v in raw["videos"])
    return Manifest(title=raw["title"], paper=raw["paper"], videos=videos, mirror=Mirror(**raw["mirror"]))
