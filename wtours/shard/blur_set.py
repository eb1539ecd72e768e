"""`wtours blur-faces`: hide faces in a shard set that already exists, writing a new set (and index): a
shard stage of its own (read, blur with wtours.privacy, write) beside `shard.run`, which blurs while sharding."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from wtours import __version__
from wtours.errors import UsageError, WtoursError
from wtours.layout import INDEX_FILE, WIDS_SUFFIX, Layout, write_bytes_atomic, write_json_atomic
from wtours.locks import folder_lock
from wtours.privacy.params import BlurParams
from wtours.privacy.stage import FaceBlur
from wtours.shard.index import INDEX_VERSION, RESHARD_HINT, ShardEntry, ShardIndex
from wtours.shard.read import iter_shard
from wtours.shard.writer import ShardSample, encode_jpeg, write_shard


def source_folder(spec: str, root: str | None) -> Path:
    """SPEC: a folder holding index.json, or a slug sharded under the data root."""
    path = Path(spec)
    if (path / INDEX_FILE).is_file():
        return path
    if "/" not in spec:
        folder = Layout(root).shard_dir(spec)
        if (folder / INDEX_FILE).is_file():
            return folder
    raise UsageError(f"{spec}: no shard set there (no {INDEX_FILE})",
                      "give a folder holding index.json, or a slug sharded under --root (`wtours shard` first)")


def blur_shard_set(source: Path, out: Path, settings: BlurParams, workers: int = 1,
                   say: Callable[[str], None] = print) -> ShardIndex:
    """Rewrite every shard of the set in `source` into `out` with faces hidden, then a new index.json.
    Samples where no face is found keep their JPEG bytes exactly; the others are decoded, blurred and
    encoded again at the set's --quality (one more JPEG generation, on those frames only). The shards are
    deterministic like `wtours shard`'s; a rerun redoes the set (the index is written last)."""
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
    if out.resolve() == source.resolve():
        raise UsageError(f"--out {out} is the source folder", "write the blurred set to a new folder")
    params = dataclasses.replace(index.params, blur_faces=True, blur=settings)
    blur = FaceBlur.from_params(settings)  # before the folder is made: a missing extra creates nothing
    with folder_lock(out, f"output folder {out}"):
        with ThreadPoolExecutor(max_workers=workers) as pool:
            entries = list(pool.map(lambda e: _rewrite(source / e.name, out / e.name, e, blur, params.quality),
                                    index.shards))
        blurred = dataclasses.replace(index, params=params, shards=tuple(entries), version=INDEX_VERSION,
                                      created_by=f"wtours {__version__}")
        write_json_atomic(out / f"{index.slug}{WIDS_SUFFIX}", blurred.wids_descriptor())
        write_bytes_atomic(out / INDEX_FILE, blurred.to_bytes())  # last: its presence means complete
    say(f"{index.slug}: {blurred.samples} frames in {len(entries)} shards, "
        f"{(blurred.privacy or {}).get('faces', 0)} faces hidden -> {out}")
    return blurred


def _rewrite(source: Path, target: Path, entry: ShardEntry, blur: FaceBlur, quality: int) -> ShardEntry:
    counts: list[int] = []

    def samples() -> Iterator[ShardSample]:
        for sample in iter_shard(source):
            rgb = np.asarray(Image.open(io.BytesIO(sample.jpg)).convert("RGB"))  # (H, W, 3) uint8
            hidden, faces = blur.apply(rgb)
            counts.append(faces)
            yield ShardSample(sample.key, encode_jpeg(hidden, quality) if faces else sample.jpg, sample.meta)

    written = write_shard(target, samples())
    if written is None or len(counts) != entry.samples:
        raise WtoursError(f"{source} holds {len(counts)} samples, its index says {entry.samples}",
                          "the source set is damaged: check it with `wtours verify`, or reshard")
    return dataclasses.replace(entry, bytes=written.bytes, sha256=written.sha256, offsets=written.offsets,
                               sample_sha256=written.sample_sha256, faces=tuple(counts))
