"""`wtours verify`: local shards checked against their index.json (size, sha256, members, sample count,
offsets, each sample's sha256), and `--repair`, which redoes just the bad shards' segments with the shard
pipeline itself (the same decoder, writer and records), so that the repaired files are byte-identical to those
the index describes."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from wtours.errors import WtoursError
from wtours.layout import INDEX_FILE, Layout, remove_stale_temporaries, sha256_file, shard_name, validate_shard_name
from wtours.locks import folder_lock
from wtours.shard.index import ShardEntry, ShardIndex, load_index
from wtours.shard.plan import plan_segments
from wtours.shard.run import prepare_job, shard_segment
from wtours.video import read_video_info


@dataclass(frozen=True)
class ShardProblem:
    name: str
    reason: str


@dataclass
class VerifyReport:
    slug: str
    shards: int
    problems: list[ShardProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    where: str | None = None  # the folder as given, where it is not the slug's under the root

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        name = self.where or self.slug
        head = f"{name}: {self.shards} shards ok" if self.ok else \
            f"{name}: {len(self.problems)} of {self.shards} shards bad"
        return [head, *(f"  {p.name}: {p.reason}" for p in self.problems), *(f"  note: {n}" for n in self.notes)]


def quick_problem(path: Path, entry: ShardEntry) -> str | None:
    """Missing, another size or another checksum than the index records (None: the file is the one indexed)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if size != entry.bytes:
        return f"{size} bytes, the index records {entry.bytes} (truncated or overwritten)"
    if sha256_file(path) != entry.sha256:
        return "sha256 differs from the index (the file is damaged)"
    return None


def member_problem(path: Path, entry: ShardEntry) -> str | None:
    """The tar's members: `<key>.jpg` + `<key>.json` pairs, as many as recorded, at the recorded offsets."""
    samples: list[tuple[str, int]] = []  # (key, offset of its .jpg member's first header) per sample
    try:
        with tarfile.open(path, mode="r|") as tar:
            pending: tuple[str, int] | None = None
            for member in tar:
                key, _, extension = member.name.partition(".")
                extracted = tar.extractfile(member) if member.isfile() else None
                data = extracted.read() if extracted is not None else None
                if data is None or len(data) != member.size:
                    return f"member {member.name} is not a complete file"
                if extension == "jpg" and pending is None:
                    pending = (key, member.offset)
                elif extension == "json" and pending is not None and pending[0] == key:
                    samples.append(pending)
                    pending = None
                else:
                    return f"member {member.name} is out of place (expected <key>.jpg then <key>.json)"
            if pending is not None:
                return f"sample {pending[0]} has no .json"
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        return f"unreadable as a tar ({e})"
    if len(samples) != entry.samples:
        return f"{len(samples)} samples, the index records {entry.samples}"
    for i, (offset, (key, start)) in enumerate(zip(entry.offsets or (), samples)):
        if offset != start:
            return f"offset {offset} of sample {i} is not the tar header of {key}.jpg"
    if entry.sample_sha256 is not None:  # what remote readers check each sample against (version 3)
        bounds = (*(entry.offsets or ()), entry.bytes)
        with open(path, "rb") as f:
            for i, (begin, end) in enumerate(zip(bounds, bounds[1:])):
                if hashlib.sha256(f.read(end - begin)).hexdigest() != entry.sample_sha256[i]:
                    return f"sample {i}'s bytes are not the ones its sample_sha256 in the index records"
    return None


def shard_problem(path: Path, entry: ShardEntry) -> str | None:
    return quick_problem(path, entry) or member_problem(path, entry)


def verify_folder(folder: Path, index: ShardIndex | None = None, where: str | None = None) -> VerifyReport:
    """Every shard of the set in exactly `folder` (its own index.json) against that index."""
    index = index or ShardIndex.read(folder / INDEX_FILE)
    if index is None:
        raise WtoursError(f"{folder} holds no {INDEX_FILE}", "give a shard folder, or run `wtours shard` first")
    report = VerifyReport(index.slug, len(index.shards), where=where)
    for entry in index.shards:
        problem = shard_problem(folder / validate_shard_name(entry.name, index.slug), entry)
        if problem:
            report.problems.append(ShardProblem(entry.name, problem))
    if not index.complete:
        report.notes.append(f"the index is incomplete (complete: false): decoding stopped at "
                            f"{index.decoded_until:.2f} s of the video (damaged or truncated video)")
    return report


def verify_set(layout: Layout, slug: str, index: ShardIndex | None = None) -> VerifyReport:
    return verify_folder(layout.shard_dir(slug), index or load_index(layout, slug))


def root_of(folder: Path, slug: str) -> Layout:
    """The data root whose shard folder of `slug` is `folder` (where --repair finds the video)."""
    layout = Layout(folder.resolve().parent.parent)
    if not (layout.shard_dir(slug).is_dir() and layout.shard_dir(slug).samefile(folder)):
        raise WtoursError(f"{folder}: cannot repair: it is not the shard folder of a data root "
                          f"(<root>/shards/{slug}) and no blur-faces output",
                          f"repair the original set (`wtours verify {slug} --root ROOT --repair`) and copy it "
                          "again, or make this set again with the command that made it")
    return layout


def repair_set(layout: Layout, slug: str, report: VerifyReport, workers: int = 1,
               say: Callable[[str], None] = print) -> VerifyReport:
    """Reshard the bad shards' segments (nothing else) and check them again; the index is not touched:
    it describes what the shards must be, and a repaired shard that differs from it is an error."""
    if report.ok:
        return report
    with folder_lock(layout.shard_dir(slug), f"shard folder of {slug}"):
        index = load_index(layout, slug)  # read again under the lock
        for folder in (layout.shard_dir(slug), layout.segments_dir(slug)):
            remove_stale_temporaries(folder)
        if read_video_info(layout, slug) is None:  # else prepare_job's error, which does not say "repair"
            raise WtoursError(f"{slug}: cannot repair: no video registered under {layout.root}",
                              f"`wtours add FILE --name {slug}` (the same file the shards were made from), "
                              f"or `wtours pull` the set again")
        job = prepare_job(layout, slug, index.params, "none")
        if job.video.sha256 != index.video.sha256:
            raise WtoursError(f"{slug}: cannot repair: the registered video is not the one the shards were made from "
                              "(sha256 differs)", f"register the original video, or reshard everything with "
                              f"`wtours shard --city {slug} --overwrite`")
        segments = {shard_name(index.slug, s.number): s for s in plan_segments(job.probe, index.params)}
        todo = []
        for problem in report.problems:
            segment = segments.get(problem.name)
            if segment is None:
                raise WtoursError(f"{slug}: {problem.name} is not a segment of the shard plan",
                                  f"reshard everything with `wtours shard --city {slug} --overwrite`")
            layout.segment_record_path(slug, segment.number).unlink(missing_ok=True)  # redo, never trust
            todo.append(segment)
        say(f"{slug}: resharding {len(todo)} segment(s): {', '.join(p.name for p in report.problems)}")
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(lambda s: shard_segment(layout, job, s), todo))
        after = verify_set(layout, slug, index)
    return still_bad(after, "resharding", "this ffmpeg or libjpeg makes other bytes than the one that made the set: "
                     f"reshard everything with `wtours shard --city {slug} --overwrite`")


def still_bad(after: VerifyReport, how: str, hint: str) -> VerifyReport:
    """`after` when repaired; else the error naming the shards that still differ from the index."""
    if still := after.problems:
        raise WtoursError(f"{after.slug}: {len(still)} shard(s) still differ from the index after {how}: "
                          f"{', '.join(p.name for p in still)} ({still[0].reason})", hint, exit_code=1)
    return after
