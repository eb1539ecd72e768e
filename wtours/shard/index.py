"""The shard index as a typed model (docs/data-format.md), the segment records, the run plan and the
wids descriptor. Every reader and writer of index.json goes through `ShardIndex`: local or remote, a file
that is not JSON or not a wtours index is a WtoursError naming it. Workers write one `SegmentRecord` per
finished segment under `_segments/`; the index is assembled from them once all are there, written last."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from wtours import __version__
from wtours.errors import UsageError, WtoursError
from wtours.layout import (
    INDEX_FILE,
    WIDS_SUFFIX,
    Layout,
    json_bytes,
    read_json,
    remove_stale_temporaries,
    validate_shard_name,
    validate_slug,
    write_bytes_atomic,
    write_json_atomic,
)
from wtours.privacy.params import FaceBox
from wtours.records import read_record
from wtours.shard.params import ShardParams
from wtours.shard.plan import Segment, merge_runs

INDEX_FORMAT = "wtours-shards"
# 4: a sample's `source_id` is "" where it was null; 3: each sample's sha256; 2: shard entries carry `offsets`;
# 1 (no offsets) is still read
INDEX_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")
RESHARD_HINT = "reshard with this version of wtours (`wtours shard --overwrite`), or re-push the set"


class _Invalid(Exception):
    """A structural problem found while parsing; turned into a WtoursError naming the file."""


@dataclass(frozen=True)
class ShardEntry:
    """One shard file: its samples, their frames, times and grid cells, its size and checksum."""

    name: str
    samples: int
    first_frame: int
    last_frame: int
    t_start: float
    t_end: float
    cell_runs: tuple[tuple[int, int], ...]  # consecutive grid cells of the samples, inclusive
    bytes: int
    sha256: str
    offsets: tuple[int, ...] | None = None  # byte offset of each sample's first tar header (version 2)
    sample_sha256: tuple[str, ...] | None = None  # of each sample's bytes, offsets[i] to the next or the end (3)
    faces: tuple[int, ...] | None = None  # faces hidden in each sample (--blur-faces), in sample order
    face_boxes: tuple[tuple[FaceBox, ...], ...] | None = None  # the boxes hidden in each sample, `faces[i]` of them

    def check(self, slug: str) -> None:
        """Named as a shard of `slug` and consistent with itself, so that a damaged or hostile index cannot
        make a reader plan absurd work (a run of 10^10 cells) or seek outside the shard."""
        validate_shard_name(self.name, slug)
        runs = self.cell_runs
        if any(not 0 <= first <= last for first, last in runs) or any(
                b[0] <= a[1] for a, b in zip(runs, runs[1:])):
            raise _Invalid(f"shard {self.name}: 'cell_runs' must be ascending, non-overlapping [first, last] runs")
        cells = sum(last - first + 1 for first, last in runs)
        if cells != self.samples:
            raise _Invalid(f"shard {self.name}: its cell_runs hold {cells} cells for {self.samples} samples")
        if not 0 <= self.samples * MIN_SAMPLE_BYTES <= self.bytes:  # every sample is at least two tar members
            raise _Invalid(f"shard {self.name}: {self.samples} samples cannot fit in {self.bytes} bytes")
        if self.offsets is not None and (len(self.offsets) != self.samples
                                         or (self.offsets and (self.offsets[0] != 0 or self.offsets[-1] >= self.bytes))
                                         or any(b <= a for a, b in zip(self.offsets, self.offsets[1:]))):
            raise _Invalid(f"shard {self.name}: 'offsets' must be {self.samples} increasing byte offsets from 0, "
                           f"inside its {self.bytes} bytes")
        digests = self.sample_sha256
        if digests is not None and (self.offsets is None or len(digests) != self.samples
                                    or not all(map(SHA256_HEX.match, digests))):
            raise _Invalid(f"shard {self.name}: 'sample_sha256' must be {self.samples} sha256 hex digests, "
                           "beside 'offsets'")
        if self.faces is not None and len(self.faces) != self.samples:
            raise _Invalid(f"shard {self.name}: 'faces' must have one count per sample ({self.samples})")
        boxes = self.face_boxes
        if boxes is not None and (self.faces is None or len(boxes) != self.samples
                                  or any(len(b) != n for b, n in zip(boxes, self.faces))
                                  or not all(0 <= x0 < x1 and 0 <= y0 < y1 and 0 <= score <= 1
                                             for sample in boxes for x0, y0, x1, y1, score in sample)):
            raise _Invalid(f"shard {self.name}: 'face_boxes' must have one list per sample ({self.samples}), "
                           "beside 'faces' and as long as its count, of [x0, y0, x1, y1, score] boxes "
                           "(0 <= x0 < x1, 0 <= y0 < y1, score in [0, 1])")

    def to_dict(self) -> dict[str, Any]:  # a field that is None is not recorded
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if v is not None}
        data["cell_runs"] = [list(run) for run in self.cell_runs]
        if self.face_boxes is not None:
            data["face_boxes"] = [[list(box) for box in sample] for sample in self.face_boxes]
        return data


MIN_SAMPLE_BYTES = 2048  # a sample's .jpg and .json members: a 512-byte header and at least one block each


@dataclass(frozen=True)
class IndexVideo:
    """The source video a shard set was made from."""

    slug: str
    source_id: str | None
    sha256: str
    duration: float
    fps: float
    width: int
    height: int
    frames: int | None = None  # the probed frame count (indexes before it: duration x fps, `source_frames`)


@dataclass(frozen=True)
class ShardIndex:
    """index.json: what a shard set holds, exactly, so that readers never need to open a shard to plan."""

    video: IndexVideo
    params: ShardParams
    shards: tuple[ShardEntry, ...]
    samples: int
    dropped: dict[str, int]
    blank_stretches: tuple[tuple[float, float], ...]
    complete: bool
    created_by: str = ""
    decoded_until: float | None = None  # only where decoding stopped early
    errors: tuple[str, ...] = ()
    version: int = INDEX_VERSION

    @property
    def slug(self) -> str:
        return self.video.slug

    @property
    def fps(self) -> float:
        return float(self.params.fps)

    @property
    def source_frames(self) -> int:
        """Frames of the source video in the part the set was made from (--start to --end): the probed count for
        the whole video (duration x fps where the index predates it), else that part's duration x fps."""
        video, p = self.video, self.params
        whole = video.frames if video.frames is not None else round(video.duration * video.fps)
        if p.start == 0 and (p.end is None or p.end >= video.duration):
            return whole
        end = video.duration if p.end is None else min(p.end, video.duration)
        return min(whole, max(0, round((end - p.start) * video.fps)))

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ShardIndex:
        """Validate and convert parsed JSON; `where` (a path or URL) names the file in the error."""
        try:
            if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
                raise _Invalid(f"its 'format' is not {INDEX_FORMAT!r}")
            if data.get("version") not in READABLE_VERSIONS:
                raise _Invalid(f"version {data.get('version')!r} is not one of {list(READABLE_VERSIONS)}")
            index = read_record(cls, {**data, "params": ShardParams.nested(data.get("params"))}, "", RESHARD_HINT)
            index.check()
        except (_Invalid, WtoursError) as e:  # WtoursError: a field's type, ShardParams' own checks, a name
            detail = e.message if isinstance(e, WtoursError) else str(e)
            detail = detail.replace("params.blur.", "params.blur_")  # the file's own (flat) key
            raise WtoursError(f"{where} is not a valid wtours shard index: {detail}", RESHARD_HINT) from e
        return index

    def check(self) -> None:
        """What the types alone do not say: a valid slug and shard names, finite positive rates, shards
        consistent with themselves and with the total."""
        validate_slug(self.video.slug)
        if not all(v > 0 for v in (self.video.fps, self.video.duration or 1.0)):
            raise _Invalid("the video's fps and duration must be finite positive numbers")
        for shard in self.shards:
            shard.check(self.slug)
        if self.samples != sum(s.samples for s in self.shards):
            raise _Invalid(f"'samples' is {self.samples}, but its shards hold {sum(s.samples for s in self.shards)}")
        if self.version == 1 and any(s.offsets is not None for s in self.shards):
            raise _Invalid("a version-1 index has no 'offsets'")

    @classmethod
    def parse(cls, text: str | bytes, where: str) -> ShardIndex:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            raise WtoursError(f"{where} is not valid JSON ({e})", RESHARD_HINT) from e
        return cls.from_dict(data, where)

    @classmethod
    def read(cls, path: Path) -> ShardIndex | None:
        """The index at `path`, None when there is none."""
        data = read_json(path)
        return None if data is None else cls.from_dict(data, str(path))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": INDEX_FORMAT,
            "version": self.version,
            # an index from before `frames` was recorded keeps its bytes when written again
            "video": {k: v for k, v in asdict(self.video).items() if k != "frames" or v is not None},
            "params": self.params.to_dict(),
            "shards": [s.to_dict() for s in self.shards],
            "samples": self.samples,
            "dropped": dict(self.dropped),
            "blank_stretches": [list(s) for s in self.blank_stretches],
            "complete": self.complete,
            "created_by": self.created_by,
        }
        if self.privacy is not None:
            data["privacy"] = self.privacy
        if not self.complete:
            data["decoded_until"] = self.decoded_until
            data["errors"] = list(self.errors)
        return data

    def to_bytes(self) -> bytes:
        """Deterministic: the same set always gives the same bytes (no wall-clock time)."""
        return json_bytes(self.to_dict())

    @property
    def privacy(self) -> dict[str, Any] | None:
        """How faces were hidden and how many (None: frames stored as decoded). Derived from the parameters
        and the per-sample counts, so it cannot disagree with them."""
        p = self.params
        if not p.blur_faces:
            return None
        counts = [c for s in self.shards for c in (s.faces or ())]
        return {"blurred": True, "detector": p.blur.detector, "threshold": p.blur.threshold, "mode": p.blur.mode,
                "scale": p.blur.scale, "upscale": p.blur.upscale, "faces": sum(counts),
                "frames_with_faces": sum(1 for c in counts if c), "max_faces_per_frame": max(counts, default=0)}

    def wids_descriptor(self) -> dict[str, Any]:
        """A wids dataset description; shard URLs are relative to the descriptor's folder."""
        return {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": self.slug,
                "shardlist": [{"url": s.name, "nsamples": s.samples} for s in self.shards]}

    def write(self, folder: Path) -> None:
        write_json_atomic(folder / f"{self.slug}{WIDS_SUFFIX}", self.wids_descriptor())
        write_bytes_atomic(folder / INDEX_FILE, self.to_bytes())  # last: its presence means complete


def load_index(layout: Layout, slug: str) -> ShardIndex:
    """The index of a sharded video in the root; a missing one says how to make it."""
    index = ShardIndex.read(layout.index_path(slug))
    if index is None:
        raise WtoursError(f"{slug} has no shard index at {layout.index_path(slug)}",
                          f"run `wtours shard --city {slug}` first (a rerun resumes)")
    return index


# ------------------------------------------------------------------ segment records


@dataclass(frozen=True)
class SegmentRecord:
    """What one finished segment produced: its shard (None when all blank), drops and blank stretches."""

    segment: Segment
    shard: ShardEntry | None
    dropped: dict[str, int]
    blank_stretches: tuple[tuple[float, float], ...]
    complete: bool
    decoded_until: float
    errors: tuple[str, ...] = ()
    version: int = 3  # the index version its shard was written for (`shard_segment` passes INDEX_VERSION);
    # records written before version 4 have no such field and read as 3

    def to_dict(self) -> dict[str, Any]:  # for JSON: tuples are written as lists
        return {**asdict(self), "shard": self.shard.to_dict() if self.shard else None}


def read_segment_record(layout: Layout, slug: str, number: int, source_id: str | None = None) -> SegmentRecord | None:
    """A finished segment's record, if its shard (when it has one) is on disk with the recorded size; None
    (the segment is redone) for a missing, stale or foreign record, or one from an older version whose samples
    differ from this version's: before version 4 a video without a `source_id` (not a corpus video) wrote a null
    one, and a set must not mix null and "" (`datasets` would fail to load it). A corpus video's version-3
    samples are byte for byte this version's, so its hours of decoding are kept."""
    data = read_json(layout.segment_record_path(slug, number))
    try:
        record = read_record(SegmentRecord, data, "segment record", RESHARD_HINT)
        if record.version != INDEX_VERSION and not (record.version == 3 and source_id):
            return None
        if record.shard is not None:
            record.shard.check(slug)
            path = layout.shard_file(slug, record.shard.name)
            if record.shard.sample_sha256 is None or not path.is_file() or path.stat().st_size != record.shard.bytes:
                return None
    except (_Invalid, WtoursError):
        return None
    return record


def build_index(video: IndexVideo, params: ShardParams, records: list[SegmentRecord]) -> ShardIndex:
    records = sorted(records, key=lambda r: r.segment.number)
    shards = tuple(r.shard for r in records if r.shard)
    dropped: Counter[str] = Counter()
    for record in records:
        dropped.update(record.dropped)
    incomplete = [r for r in records if not r.complete]
    merged = merge_runs((s for r in records for s in r.blank_stretches), gap=1.5 / params.fps)  # across segments
    return ShardIndex(video, params, shards, sum(s.samples for s in shards), dict(dropped),
                      tuple(merged), not incomplete, f"wtours {__version__}",
                      incomplete[0].decoded_until if incomplete else None,
                      incomplete[0].errors if incomplete else ())


# ------------------------------------------------------------------ plan

PLAN_FORMAT = "wtours-shard-plan"


def write_plan(layout: Layout, video: IndexVideo, params: ShardParams, segments: int, output: tuple[int, int],
               overwrite: bool) -> None:
    """Record what this shard set is made of (output: the frames' width and height); refuse to mix sets
    made from other inputs."""
    slug = video.slug
    existing = read_json(layout.plan_path(slug))
    new: dict[str, Any] = {"format": PLAN_FORMAT, "video": asdict(video), "params": params.to_dict(),
                           "segments": segments, "output": {"width": output[0], "height": output[1]}}
    if existing is not None and existing != new and not overwrite:
        changes = [k for k in ("video", "params", "segments") if existing.get(k) != new.get(k)]
        was = existing.get("params", {})
        parts = [f"{key} {was.get(key)} -> {value}" for key, value in new["params"].items() if was.get(key) != value]
        if existing.get("video", {}).get("sha256") != video.sha256:
            parts.insert(0, "the source video changed (sha256 differs)")
        raise WtoursError(f"{layout.shard_dir(slug)} holds shards made with other {' and '.join(changes)}: "
                          f"{', '.join(parts) or 'the plan differs'}",
                          "rerun with --overwrite to replace them, or keep the old parameters (a rerun resumes)")
    if existing != new:
        write_json_atomic(layout.plan_path(slug), new)


def planned_settings(layout: Layout, slug: str) -> dict[str, Any]:
    """The settings `slug`'s shard set is being made with, as its plan records them (nested as the ShardParams
    fields are), for `wtours shard --finalize`: it finishes that set, whatever its flags were. No plan: an error."""
    plan = read_json(layout.plan_path(slug))
    if plan is None:
        raise UsageError(f"{slug}: nothing to finalize: {layout.plan_path(slug)} does not exist",
                         f"shard it first: `wtours shard --city {slug}` (with the settings you want)")
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT or not isinstance(plan.get("params"), dict):
        raise WtoursError(f"{layout.plan_path(slug)} is not a wtours shard plan",
                          f"rerun `wtours shard --city {slug}` with the settings of the set (or --overwrite)")
    return ShardParams.nested(plan["params"])


def clear_shard_dir(layout: Layout, slug: str) -> None:
    """--overwrite: remove this slug's shards, records, plan and index (nothing else)."""
    folder = layout.shard_dir(slug)
    if not folder.is_dir():
        return
    for path in [*layout.shard_files(slug), *layout.segments_dir(slug).glob("*.json"), layout.index_path(slug),
                 layout.wids_path(slug), layout.plan_path(slug)]:
        path.unlink(missing_ok=True)
    remove_stale_temporaries(folder)
