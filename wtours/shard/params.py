"""Shard parameters (what the bytes depend on) and run options (how the work is spread)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from wtours.config import NOT_NEGATIVE, POSITIVE, Checked, Range, option
from wtours.errors import UsageError
from wtours.privacy.params import FLAT_PREFIX, BlurParams

# Defaults for DoRA: clips are 8 frames 1 s apart, so 2 frames/s lets clips start on half-second
# offsets (twice the distinct clips of 1 fps). The 300 px clip crop takes 20..100% of the frame's
# area; a 512 px short side keeps even the smallest crop (about 0.45 of each side) above 300 px.
DEFAULT_FPS = 2.0
DEFAULT_SHORT_SIDE = 512
DEFAULT_QUALITY = 90
DEFAULT_SAMPLES_PER_SHARD = 1000  # 500 s of video at 2 fps, about 100-150 MB of JPEGs
DEFAULT_BLANK_THRESHOLD = 3.0  # luma standard deviation (0..255) under which a frame is blank


@dataclass(frozen=True)
class ShardParams(Checked):
    """Everything the shard bytes depend on; recorded in the plan and the index."""

    fps: float = option(DEFAULT_FPS, "Frames sampled per second.", range=POSITIVE)
    short_side: int = option(DEFAULT_SHORT_SIDE, "Scale so the short side has this many pixels (never upscales).",
                             range=Range(16, 4320))
    quality: int = option(DEFAULT_QUALITY, "JPEG quality.", range=Range(1, 100))
    samples_per_shard: int = option(DEFAULT_SAMPLES_PER_SHARD, "Grid slots per shard: each shard covers "
                                                               "samples-per-shard / fps seconds.", range=Range(1))
    start: float = option(0.0, "First second to shard, from the video's first timestamp.", range=NOT_NEGATIVE)
    end: float | None = option(None, "Last second to shard (default: the end); after --start.", range=POSITIVE)
    blank_threshold: float = option(DEFAULT_BLANK_THRESHOLD, "Frames whose luma standard deviation is below this are "
                                                             "blank and dropped.", range=Range(0, 255))
    # Face blurring (wtours/privacy, docs/privacy.md): recorded only when on, so plain sets keep their plan.
    blur_faces: bool = option(False, "Detect faces in each sampled frame and blur them before encoding (needs the "
                                     "privacy extra).")
    blur: BlurParams = field(default_factory=BlurParams)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.end is not None and self.end <= self.start:
            raise UsageError(f"--end {self.end:g} is not after --start {self.start:g}",
                             "--end is the last second to shard, counted from the video's start as --start is")

    def to_dict(self) -> dict:
        """Flat, as plans and indexes record it; the blur settings only when on, so plain sets keep the
        plan and index they had before blurring existed."""
        data = {k: v for k, v in asdict(self).items() if k != "blur" and (k != "blur_faces" or self.blur_faces)}
        return {**data, **self.blur.to_flat()} if self.blur_faces else data

    @staticmethod
    def nested(data: Any) -> Any:
        """`to_dict`'s flat form with its blur_* keys as the nested `blur` record, the shape of the fields
        (records.read_record reads plans' and indexes' params so); anything but a mapping as it is."""
        if not isinstance(data, Mapping):
            return data
        blur = {k: v for k, v in data.items() if k.startswith(FLAT_PREFIX) and k != "blur_faces"}
        rest = {k: v for k, v in data.items() if k not in blur}
        return {**rest, "blur": {k[len(FLAT_PREFIX):]: v for k, v in blur.items()}}


@dataclass(frozen=True)
class RunOptions:
    """How one invocation works: none of this changes the bytes written."""

    workers: int = 1
    hwaccel: str = "none"  # "auto", "none" or "cuda"
    num_nodes: int = 1
    node_rank: int = 0
    overwrite: bool = False
    finalize_only: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise UsageError("--workers must be at least 1", "use the number of CPU cores, e.g. --workers 8")
        if not 0 <= self.node_rank < self.num_nodes:
            raise UsageError(f"--node-rank {self.node_rank} is outside 0..{self.num_nodes - 1}",
                              "give each of the --num-nodes machines a distinct rank from 0")
        if self.overwrite and self.num_nodes > 1:  # machines start at different times: a late one would clear
            raise UsageError(f"--overwrite with --num-nodes {self.num_nodes}: every machine would clear the set, "
                             "removing segments that another machine has already finished",
                             "clear the set once before the job (delete its folder under ROOT/shards/), then "
                             "start every machine without --overwrite")


def nodes_from_environment(env: dict[str, str] | None = None) -> tuple[int, int]:
    """(num_nodes, node_rank) from a SLURM array job or SLURM tasks; (1, 0) elsewhere."""
    env = dict(os.environ) if env is None else env
    if "SLURM_ARRAY_TASK_COUNT" in env and "SLURM_ARRAY_TASK_ID" in env:
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        return int(env["SLURM_ARRAY_TASK_COUNT"]), int(env["SLURM_ARRAY_TASK_ID"]) - first
    if "SLURM_NTASKS" in env and "SLURM_PROCID" in env:
        return int(env["SLURM_NTASKS"]), int(env["SLURM_PROCID"])
    return 1, 0
