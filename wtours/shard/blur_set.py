"""`wtours blur-faces`: hide faces in a shard set that already exists, writing a new set (and index): a
shard stage of its own (read, blur with wtours.privacy, write) beside `shard.run`, which blurs while sharding."""

from __future__ import annotations

import dataclasses
import io
import tarfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from wtours import __version__
from wtours.errors import UsageError, WtoursError
from wtours.layout import (
    BLUR_SOURCE_FILE,
    INDEX_FILE,
    PLAN_FILE,
    WIDS_SUFFIX,
    Layout,
    read_json,
    remove_stale_temporaries,
    sha256_file,
    write_json_atomic,
)
from wtours.locks import folder_lock, reading, refuse_if_written
from wtours.privacy.blur import FaceBlur
from wtours.privacy.params import BlurParams, FaceBox
from wtours.shard.index import INDEX_VERSION, RESHARD_HINT, ShardEntry, ShardIndex
from wtours.shard.read import iter_shard
from wtours.shard.verify import VerifyReport, shard_problem, still_bad, verify_folder
from wtours.shard.writer import ShardSample, encode_jpeg, write_shard


def source_folder(spec: str, root: str | None) -> Path:
    """SPEC: a slug sharded under the data root (`Layout.names_set`), else a folder holding index.json."""
    layout = Layout(root)
    folder = layout.shard_dir(spec) if layout.names_set(spec) else Path(spec)
    if (folder / INDEX_FILE).is_file():
        return folder
    refuse_if_written(folder)
    raise UsageError(f"{spec}: no shard set there (no {folder / INDEX_FILE})",
                      "give a slug sharded under --root (`wtours shard` first), or a folder holding index.json "
                      "(./NAME for one named like a video)")


def within(out: Path, source: Path) -> bool:
    """`out` is `source` or inside it, by identity (device and inode) of out's existing ancestors as typed:
    whatever path reaches the source (a symlink, a bind mount, a second NFS mount)."""
    path = out.absolute()
    return any(folder.exists() and folder.samefile(source) for folder in (path, *path.parents))


def blurred_from(folder: Path) -> dict | None:
    """The record of the set a blur-faces output was made from (None: not a blur-faces output)."""
    record = read_json(folder / BLUR_SOURCE_FILE)
    if record is not None and not (isinstance(record, dict) and isinstance(record.get("source"), str)
                                   and isinstance(record.get("index_sha256"), str)):
        raise WtoursError(f"{folder / BLUR_SOURCE_FILE} is not a blur-faces source record",
                          f"blur the source set again: `wtours blur-faces SOURCE --out {folder} --overwrite`")
    return record


def blur_shard_set(source: Path, out: Path, settings: BlurParams, workers: int = 1,
                   say: Callable[[str], None] = print, overwrite: bool = False) -> ShardIndex:
    """Rewrite every shard of the set in `source` into `out` with faces hidden, then a new index.json.
    Samples where no face is found keep their JPEG bytes exactly; the others are decoded, blurred and
    encoded again at the set's --quality (one more JPEG generation, on those frames only). The shards are
    deterministic like `wtours shard`'s; a rerun redoes the set (the index is written last). `out` records
    the source (BLUR_SOURCE_FILE), so that `wtours verify --repair` can blur a damaged shard again. The source is
    held as its reader meanwhile (no run replaces or repairs it under the blur), `out` as its writer."""
    with reading([source]):
        return _blur_shard_set(source, out, settings, workers, say, overwrite)


def _blur_shard_set(source: Path, out: Path, settings: BlurParams, workers: int, say: Callable[[str], None],
                    overwrite: bool) -> ShardIndex:
    index = ShardIndex.read(source / INDEX_FILE)
    if index is None:
        raise WtoursError(f"{source} holds no {INDEX_FILE}", "run `wtours shard` first")
    if index.params.blur_faces:
        done = index.privacy or {}
        raise UsageError(f"{source}: its frames were already blurred ({done.get('faces')} faces hidden by "
                          f"{done.get('detector')} at threshold {done.get('threshold')})",
                          "blur the original, unblurred shards instead (or `wtours shard --blur-faces`)")
    if index.version == 1:  # its rounded times would read as version 3's exact ones
        raise UsageError(f"{source}: its index is version 1, which this rewrite cannot keep", RESHARD_HINT)
    if within(out, source):
        raise UsageError(f"--out {out} is the source folder {source} or inside it (by another path)",
                          "write the blurred set to a new folder outside the source")
    earlier = ShardIndex.read(out / INDEX_FILE) if (out / INDEX_FILE).is_file() else None
    if (earlier or (out / PLAN_FILE).is_file()) and not overwrite and not (
            (record := blurred_from(out)) and within(Path(record["source"]), source)):  # not a rerun
        raise UsageError(f"--out {out} holds another shard set (its {INDEX_FILE} or {PLAN_FILE})",
                          "choose a new folder, or pass --overwrite to replace that set")
    bad = [f"{e.name}: {problem}" for e in index.shards if (problem := shard_problem(source / e.name, e))]
    if bad:
        raise WtoursError(f"{source}: {len(bad)} damaged shard(s), nothing blurred: {'; '.join(bad)}",
                          f"repair the source first (`wtours verify {source} --repair`), then rerun")
    params = dataclasses.replace(index.params, blur_faces=True, blur=settings)
    blur = FaceBlur.from_params(settings)  # before the folder is made: a missing extra creates nothing
    names = {e.name for e in index.shards} | {INDEX_FILE, f"{index.slug}{WIDS_SUFFIX}", BLUR_SOURCE_FILE}
    with folder_lock(out, f"output folder {out}"):
        replaced = [f"{earlier.slug}{WIDS_SUFFIX}", *(e.name for e in earlier.shards)] if earlier else []
        for name in (INDEX_FILE, BLUR_SOURCE_FILE, *replaced):  # the index first: a partial set never looks whole
            (out / name).unlink(missing_ok=True)
        remove_stale_temporaries(out, lambda name: name in names)
        write_json_atomic(out / BLUR_SOURCE_FILE, {"format": "wtours-blur-source", "source": str(source.resolve()),
                                                   "index_sha256": sha256_file(source / INDEX_FILE)})
        entries = _rewrite_all(source, out, index.shards, blur, params.quality, workers)
        blurred = dataclasses.replace(index, params=params, shards=tuple(entries), version=INDEX_VERSION,
                                      created_by=f"wtours {__version__}")
        blurred.write(out)  # the index last: its presence means complete
    say(f"{index.slug}: {blurred.samples} frames in {len(entries)} shards, "
        f"{(blurred.privacy or {}).get('faces', 0)} faces hidden -> {out}")
    return blurred


def repair_blurred_set(folder: Path, report: VerifyReport, workers: int = 1,
                       say: Callable[[str], None] = print) -> VerifyReport:
    """`wtours verify --repair` of a blur-faces output: blur the bad shards again from the recorded source set
    (the blur is deterministic, so the repaired files must be those the index describes)."""
    if report.ok:
        return report
    recorded = blurred_from(folder)
    assert recorded is not None  # recognised before the repair
    with folder_lock(folder, f"blurred set {folder}"), reading([Path(recorded["source"])]):
        index, record = ShardIndex.read(folder / INDEX_FILE), blurred_from(folder)
        assert index is not None and record is not None  # verified and recognised before the repair
        source = Path(record["source"])
        again = f"blur the source again: `wtours blur-faces {source} --out {folder} --overwrite`"
        known = (source / INDEX_FILE).is_file() and sha256_file(source / INDEX_FILE) == record["index_sha256"]
        source_index = ShardIndex.read(source / INDEX_FILE) if known else None
        if source_index is None:
            raise WtoursError(f"{folder}: cannot repair: its source set {source} is gone or was changed since "
                              "the blur (its index.json differs)", f"restore that source set, or {again}")
        remove_stale_temporaries(folder, lambda name: name in {e.name for e in index.shards})
        sources = {e.name: e for e in source_index.shards}
        todo = [sources[p.name] for p in report.problems if p.name in sources]
        damaged = [f"{e.name}: {problem}" for e in todo if (problem := shard_problem(source / e.name, e))]
        if damaged or len(todo) != len(report.problems):
            raise WtoursError(f"{folder}: cannot repair: the source set {source} lacks or has damaged shards "
                              f"too: {'; '.join(damaged) or 'not in its index'}",
                              f"repair the source first (`wtours verify {source} --repair`), then rerun, or {again}")
        say(f"{index.slug}: blurring {len(todo)} shard(s) again from {source}: {', '.join(e.name for e in todo)}")
        _rewrite_all(source, folder, todo, FaceBlur.from_params(index.params.blur), index.params.quality, workers)
        after = verify_folder(folder, index, report.where)
    return still_bad(after, "blurring again", f"this detector or libjpeg makes other bytes than the one that "
                                             f"made the set: {again}")


def _rewrite_all(source: Path, out: Path, entries: Sequence[ShardEntry], blur: FaceBlur, quality: int,
                 workers: int) -> list[ShardEntry]:
    """Blur the shards `entries` of `source` into `out`; on a sample that does not decode, none stays."""
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return list(pool.map(lambda e: _rewrite(source / e.name, out / e.name, e, blur, quality), entries))
    except WtoursError:
        for entry in entries:  # the others finished before the pool closed: no set without all its frames
            (out / entry.name).unlink(missing_ok=True)
        raise


def _rewrite(source: Path, target: Path, entry: ShardEntry, blur: FaceBlur, quality: int) -> ShardEntry:
    boxes: list[tuple[FaceBox, ...]] = []  # the faces hidden in each sample, in sample order

    def samples() -> Iterator[ShardSample]:
        try:
            for sample in iter_shard(source):
                rgb = np.asarray(Image.open(io.BytesIO(sample.jpg)).convert("RGB"))  # (H, W, 3) uint8
                hidden, found = blur.apply(rgb)
                boxes.append(found)
                yield ShardSample(sample.key, encode_jpeg(hidden, quality) if found else sample.jpg, sample.meta)
        except (OSError, EOFError, ValueError, tarfile.TarError) as e:  # PIL's decode errors are OSErrors
            raise WtoursError(f"{source}: sample {len(boxes)} does not read or decode ({e})",
                              "the source set is damaged: check it with `wtours verify`, or reshard") from e

    written = write_shard(target, samples())
    if written is None or len(boxes) != entry.samples:
        raise WtoursError(f"{source} holds {len(boxes)} samples, its index says {entry.samples}",
                          "the source set is damaged: check it with `wtours verify`, or reshard")
    return dataclasses.replace(entry, **dataclasses.asdict(written),  # bytes, sha256, offsets
                               faces=tuple(map(len, boxes)), face_boxes=tuple(boxes))
