"""Which videos or shard sets a command works on: --city names and --all, resolved against the root."""

from __future__ import annotations

from wtours.errors import UsageError, WtoursError
from wtours.layout import SLUG_PATTERN, Layout
from wtours.manifest import load_manifest
from wtours.video import read_video_info


def video_slugs(layout: Layout, cities: tuple[str, ...], all_videos: bool, action: str) -> list[str]:
    """Registered videos (--all), or each --city as a registered name or a corpus city ('Chiang Mai')."""
    if all_videos:
        slugs = [s for s in layout.video_slugs() if read_video_info(layout, s)]
        if not slugs:
            raise WtoursError(f"no videos registered under {layout.root}",
                              "run `wtours download` or `wtours add` first")
        return slugs
    if not cities:
        raise UsageError(f"nothing to {action}", "name a video with --city SLUG, or pass --all")
    registered = set(layout.video_slugs())
    return [name if name in registered else load_manifest().resolve(name).slug for name in cities]


def shard_set_slugs(layout: Layout, cities: tuple[str, ...], all_sets: bool, action: str) -> list[str]:
    """Shard sets with an index.json (--all), or each --city as a shard folder's name or a corpus city."""
    if all_sets:
        slugs = layout.indexed_slugs()
        if not slugs:
            raise WtoursError(f"no shard sets under {layout.shards_base()}", "run `wtours shard --city SLUG` first")
        return slugs
    if not cities:
        raise UsageError(f"nothing to {action}", "name a shard set with --city SLUG, or pass --all")
    return [name if SLUG_PATTERN.match(name) and layout.index_path(name).is_file()
            else load_manifest().resolve(name).slug for name in cities]
