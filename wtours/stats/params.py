"""What the statistics depend on (analysis, transition and detector parameters) and how a run works."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from wtours.errors import WtoursError
from wtours.shard.params import DEFAULT_FPS

SOURCES = ("shards", "video")
DEVICES = ("auto", "cpu", "cuda")
# --from video samples on the same grid as the default shards, so both sources analyse the same frames.
DEFAULT_VIDEO_EVERY = 1 / DEFAULT_FPS
# Lightness and the colour histogram are measured on a regular grid of about this many pixels
# (every 9th pixel of every 9th row of a 683x512 shard frame): see docs/stats.md for the error.
DEFAULT_ANALYSIS_PIXELS = 4096
DEFAULT_CHUNK = 500  # frames per resume part: a killed run loses at most this much work


@dataclass(frozen=True)
class AnalysisParams:
    """Everything the per-frame table depends on; recorded with the resume parts."""

    source: str = "shards"
    every: float | None = None  # seconds between analysed frames; None: every shard sample, or 0.5 s from video
    analysis_pixels: int = DEFAULT_ANALYSIS_PIXELS  # 0: every pixel

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise WtoursError(f"--from {self.source!r} is not one of {', '.join(SOURCES)}",
                              "use --from shards or --from video")
        if self.every is not None and self.every <= 0:
            raise WtoursError("--every must be positive", "e.g. --every 1 analyses one frame per second")
        if self.analysis_pixels < 0:
            raise WtoursError("the analysis size must be >= 0 pixels (0: full frames)", "see docs/stats.md")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TransitionParams:
    """Thresholds of the hard-cut and gradual scene-change detectors (docs/stats.md says why these values)."""

    cut_min: float = 0.25  # change score (0..1) below which nothing is a cut, however quiet the stretch
    cut_k: float = 5.0  # a cut exceeds the local median by this many robust standard deviations
    cut_window: float = 3.0  # seconds each side of a frame that set its local median and spread
    min_gap: float = 1.0  # seconds: one cut per transition, and content that comes back within it is no cut
    drift_window: float = 10.0  # seconds over which content must drift for a gradual scene change
    drift_threshold: float = 0.4  # histogram distance (0..1) that counts as a new scene
    drift_smooth: float = 2.0  # seconds of frames averaged at each end of a drift window

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DetectorParams:
    name: str = "fasterrcnn-mobilenet-320"
    score_threshold: float = 0.5
    device: str = "auto"
    batch_size: int = 8
    weights: Path | None = None  # a state-dict file instead of torchvision's cached download

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise WtoursError(f"--device {self.device!r} is not one of {', '.join(DEVICES)}", "use auto, cpu or cuda")
        if not 0 <= self.score_threshold <= 1:
            raise WtoursError("the detection score threshold must be within 0..1", "the default is 0.5")
        if self.batch_size < 1:
            raise WtoursError("--batch-size must be at least 1", "e.g. 8 on a GPU")


@dataclass(frozen=True)
class StatsConfig:
    analysis: AnalysisParams = field(default_factory=AnalysisParams)
    transitions: TransitionParams = field(default_factory=TransitionParams)
    classes: bool = True
    detector: DetectorParams = field(default_factory=DetectorParams)
    out: Path | None = None  # folder holding <slug>/ and the corpus tables; default <root>/stats
    top: int = 20  # classes shown in the frequency plot and the summary's `top`
    chunk: int = DEFAULT_CHUNK
    overwrite: bool = False  # drop resume parts and start again
    progress: bool = True

    def __post_init__(self) -> None:
        if self.chunk < 1:
            raise WtoursError("--chunk must be at least 1 frame", f"the default is {DEFAULT_CHUNK}")
