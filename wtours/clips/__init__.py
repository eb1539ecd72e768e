"""Streaming clips from shards: spec -> shard shuffle -> node/worker split -> tar -> clips -> transform -> batch.

The public API, for any method (docs/loader.md): `Clips` (batches of T-frame clips, decoded or as JPEG
bytes, with keys, times and source frame numbers), its `ClipItem` and `ClipItems`, `DoraViews` (DoRA's
multi-crop as a transform), and `ClipDataModule` (Lightning; `pip install 'wtours[lightning]'`). They load
on first use, so `wtours.clips.spec` and the other light modules import without torch."""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {"Clips": "dataset", "ClipItem": "dataset", "ClipItems": "dataset", "ClipUndecodable": "dataset",
           "DoraViews": "dataset", "collate_clips": "dataset", "ClipDataModule": "datamodule"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
