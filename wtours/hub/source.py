"""Provenance of a shard set: where its video came from, who made it, and under which licence; and a
local shard set as the Hub commands take it (`read_local_set`: index, its bytes, provenance).

The dataset card attributes every video from these records (CC BY requires it). A record comes from
the video's info.json (written by `wtours download` / `wtours add`), else from
<root>/shards/<slug>/source.json (written by `wtours pull`), else from the corpus manifest (source URL
and licence, no creator)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wtours.errors import WtoursError
from wtours.layout import Layout, read_json
from wtours.manifest import CITY_WALK, load_manifest
from wtours.shard.index import ShardIndex, load_index
from wtours.video import read_video_info

SOURCE_KEYS = ("url", "webpage_url", "id", "title", "uploader", "channel_url", "upload_date", "license")
VIDEO_KEYS = ("duration", "width", "height", "fps", "codec")


def source_record(layout: Layout, slug: str) -> dict[str, Any] | None:
    info = read_video_info(layout, slug)
    if info is not None:  # the shareable part of its info.json: no local paths, no machine details
        probe = info.probe.to_dict()
        video = {"sha256": info.sha256, "bytes": info.bytes, **{k: probe[k] for k in VIDEO_KEYS}}
        return {"slug": info.slug, "city": info.city, "kind": info.kind,
                "source": {k: info.source.get(k) for k in SOURCE_KEYS}, "video": video}
    pulled = read_json(layout.source_path(slug))
    if pulled:
        return pulled
    entry = load_manifest().get(slug)
    if entry:
        source = {**dict.fromkeys(SOURCE_KEYS), "url": entry.url, "id": entry.youtube_id, "license": entry.license}
        return {"slug": slug, "city": entry.city, "kind": entry.kind, "source": source, "video": None}
    return None


def is_corpus_city_walk(record: dict[str, Any] | None) -> bool:
    """Whether a set's video is one of the corpus's city walks (the manifest's kind, recorded with the video
    by `wtours download` / `wtours add` under a corpus name): footage known to be full of bystanders. A
    video of your own (a name outside the manifest) has no kind: what it shows is yours to know."""
    return (record or {}).get("kind") == CITY_WALK


def check_attribution(slug: str, record: dict[str, Any] | None, layout: Layout) -> dict[str, Any]:
    """The card must name each video's source and licence: refuse a set whose video has neither."""
    source = (record or {}).get("source") or {}
    if record is None or not source.get("url") or not source.get("license"):
        missing = " and ".join(k for k in ("url", "license") if not source.get(k))
        raise WtoursError(
            f"{slug}: no source {missing} recorded, and the dataset card must attribute every video",
            f"record where the video comes from: `wtours download --url URL --name {slug}` does it; for a file "
            f"added from disk, add it again with its provenance: `wtours add FILE --name {slug} "
            f"--source-url URL --uploader NAME --license CC-BY-4.0` (it is recorded in {layout.info_path(slug)})")
    return record


@dataclass(frozen=True)
class LocalSet:
    """A shard set under a data root, checked to be complete and attributable (what push and the card need)."""

    slug: str
    index: ShardIndex
    index_bytes: bytes  # index.json as written (pushed byte-identical)
    record: dict[str, Any]  # its provenance record


def read_local_set(layout: Layout, slug: str) -> LocalSet:
    """The index (validated), every shard present at its recorded size, and a source URL and licence."""
    index = load_index(layout, slug)
    for shard in index.shards:
        path = layout.shard_file(slug, shard.name)
        if not path.is_file() or path.stat().st_size != shard.bytes:
            raise WtoursError(f"{path} is missing or not the size its index records ({shard.bytes} bytes)",
                              f"rerun `wtours shard --city {slug}` (it resumes and rewrites missing shards)")
    record = check_attribution(slug, source_record(layout, slug), layout)
    return LocalSet(slug, index, layout.index_path(slug).read_bytes(), record)
