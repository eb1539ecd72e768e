"""Resume state: the per-frame rows of a run in parquet parts, under a key naming what they depend on.

A run appends a part every `chunk` frames (written atomically); a rerun with the same key continues after the last
part's time, one with another key (other source, sampling or detector) starts again."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from wtours.layout import STATS_PARTS_DIR, read_json, remove_stale_temporaries, replace_atomically, write_json_atomic

KEY_FILE = "key.json"
HIST_COLUMN = "hist"  # uint16 histogram bytes: needed to find transitions, not written to frames.parquet
THUMB_COLUMN = "thumb"  # (27, 48, 3) uint8 bytes, TransNetV2's input (--cuts transnetv2 only)


class Parts:
    def __init__(self, folder: Path, key: dict[str, Any]):
        self.folder = folder / STATS_PARTS_DIR
        self.key = key

    def prepare(self, overwrite: bool, say: Callable[[str], None]) -> tuple[float | None, int]:
        """Keep the parts of an earlier run with the same key: (time to resume after, rows done)."""
        existing = read_json(self.folder / KEY_FILE)
        if existing not in (None, self.key) and not overwrite:
            say(f"{self.folder.parent.name}: the source or parameters changed since the last run; starting over")
        if (overwrite or existing != self.key) and self.folder.exists():
            shutil.rmtree(self.folder)  # another run's parts, or parts without a key (an interrupted first write)
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.folder)  # a part being written when the run was killed
        write_json_atomic(self.folder / KEY_FILE, self.key)
        paths = self.paths()
        if not paths:
            return None, 0
        import pyarrow.parquet as pq

        done = sum(pq.read_metadata(p).num_rows for p in paths)
        last = pq.read_table(paths[-1], columns=["t"]).column("t").to_pylist()
        return (max(last) if last else None), done

    def paths(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet"))

    def write(self, rows: list[dict[str, Any]], hists: list[np.ndarray], thumbs: list[np.ndarray] | None = None
              ) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {"t": pa.float64(), "frame": pa.int64(), "width": pa.int32(), "height": pa.int32(),
                 "objects": pa.int32(), "classes": pa.int32(), "labels": pa.list_(pa.string()), "faces": pa.int32(),
                 "face_boxes": pa.list_(pa.list_(pa.float64()))}  # per face [x0, y0, x1, y1, score]
        columns = {name: pa.array([row[name] for row in rows], type=types.get(name, pa.float64())) for name in rows[0]}
        columns[HIST_COLUMN] = pa.array([h.astype("<u2").tobytes() for h in hists], type=pa.binary())
        if thumbs is not None:
            columns[THUMB_COLUMN] = pa.array([np.ascontiguousarray(f).tobytes() for f in thumbs], type=pa.binary())
        table = pa.table(columns)
        path = self.folder / f"part-{len(self.paths()):06d}.parquet"
        replace_atomically(path, lambda tmp: pq.write_table(table, tmp))

    def read(self) -> tuple[Any, np.ndarray]:
        """All rows in time order as a DataFrame (without histograms) and the (N, BINS) uint16 histograms;
        (None, an empty array) when no part was written yet."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.paths():
            return None, np.zeros((0, 0), dtype=np.uint16)
        tables, hist_parts = [], []
        for path in self.paths():  # one part at a time, so no per-frame Python objects exist at once
            table = pq.read_table(path)
            hist_parts.append(np.frombuffer(b"".join(table.column(HIST_COLUMN).to_pylist()), dtype="<u2"))
            tables.append(table.drop_columns([c for c in (HIST_COLUMN, THUMB_COLUMN) if c in table.column_names]))
        frame = pa.concat_tables(tables, promote_options="default").to_pandas()  # parts from before a column: null
        hists = np.concatenate(hist_parts).reshape(len(frame), -1)  # (N, BINS) uint16
        order = np.argsort(frame["t"].to_numpy(), kind="stable")
        return frame.iloc[order].reset_index(drop=True), hists[order]

    def read_thumbnails(self, shape: tuple[int, ...]) -> np.ndarray:
        """(N, *shape) uint8 frames stored with the rows, in the time order of `read`."""
        import pyarrow.parquet as pq

        times, blobs = [], []
        for path in self.paths():
            table = pq.read_table(path, columns=["t", THUMB_COLUMN])
            times.append(table.column("t").to_numpy())
            blobs.append(np.frombuffer(b"".join(table.column(THUMB_COLUMN).to_pylist()), dtype=np.uint8))
        if not times:
            return np.zeros((0, *shape), dtype=np.uint8)
        order = np.argsort(np.concatenate(times), kind="stable")
        return np.concatenate(blobs).reshape(-1, *shape)[order]
