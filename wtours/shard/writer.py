"""Deterministic WebDataset tar writing: fixed member metadata, temporary name, atomic rename."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)  # libjpeg-turbo: deterministic
    return buffer.getvalue()


def encode_json(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8")


class _HashingFile:
    """A write-only file wrapper that hashes and counts what passes through."""

    def __init__(self, raw):
        self.raw, self.digest, self.size = raw, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.size


class ShardWriter:
    """Writes one shard under a temporary name; `close()` fsyncs and renames it into place.

    Members are `<key>.jpg` then `<key>.json` per sample, with mtime 0, uid/gid 0, mode 0644 and no
    user names, so the same samples always give the same bytes."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{id(self):x}")
        self._raw = open(self.tmp, "wb")
        self._file = _HashingFile(self._raw)
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
        self.samples = 0

    def write(self, key: str, members: dict[str, bytes]) -> None:
        for extension, data in members.items():
            info = tarfile.TarInfo(f"{key}.{extension}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self.samples += 1

    def close(self) -> tuple[int, str]:
        """Finish the archive and rename it into place; returns (bytes, sha256)."""
        self._tar.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self.tmp, self.path)
        return self._file.size, self._file.digest.hexdigest()

    def abort(self) -> None:
        self._raw.close()
        self.tmp.unlink(missing_ok=True)
