"""What the statistics depend on (analysis, transition and detector parameters) and how a run works."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from wtours.config import AT_LEAST_1, FRACTION, NOT_NEGATIVE, POSITIVE, Checked, Range, option
from wtours.errors import UsageError
from wtours.shard.params import DEFAULT_FPS

# --from video samples on the same grid as the default shards, so both sources analyse the same frames.
DEFAULT_VIDEO_EVERY = 1 / DEFAULT_FPS
# Lightness and the colour histogram are measured on a regular grid of about this many pixels
# (every 9th pixel of every 9th row of a 683x512 shard frame): see docs/stats.md for the error.
DEFAULT_ANALYSIS_PIXELS = 4096


@dataclass(frozen=True)
class AnalysisParams(Checked):
    """Everything the per-frame table depends on; recorded with the resume parts."""

    source: str = option("shards", "Read the shards (fast), or decode the video itself.", option="--from",
                         choices=("shards", "video"))
    every: float | None = option(None, "Seconds between analysed frames (default: every shard sample; 0.5 from the "
                                       "video).", metavar="SECONDS", range=POSITIVE)
    analysis_pixels: int = option(DEFAULT_ANALYSIS_PIXELS, "Pixels of the grid each frame is measured on (0: every "
                                                           "pixel; docs/stats.md gives the error).", range=NOT_NEGATIVE)


@dataclass(frozen=True)
class TransitionParams(Checked):
    """Thresholds of the hard-cut and gradual scene-change detectors (docs/stats.md says why these values)."""

    cut_min: float = option(0.25, "Change score below which nothing is a cut, however quiet the stretch.",
                            range=FRACTION)
    cut_k: float = option(5.0, "A cut exceeds the local median score by this many robust standard deviations.",
                          range=POSITIVE)
    cut_window: float = option(3.0, "Seconds each side of a frame that set its local median and spread.",
                               range=POSITIVE)
    min_gap: float = option(1.0, "Seconds: one cut per transition; content that comes back within it is no cut.",
                            range=NOT_NEGATIVE)
    drift_window: float = option(10.0, "Seconds over which content must drift for a gradual scene change.",
                                 range=POSITIVE)
    drift_threshold: float = option(0.4, "Histogram distance over the drift window that counts as a new scene.",
                                    range=FRACTION)
    drift_smooth: float = option(2.0, "Seconds of frames averaged at each end of a drift window.", range=NOT_NEGATIVE)


@dataclass(frozen=True)
class Backend:
    builder: str  # torchvision.models.detection function
    weights: str  # its weights enum member, "Enum.MEMBER"


# Named factories (docs/stats.md compares them); the first is the default.
BACKENDS: dict[str, Backend] = {
    # Faster R-CNN, MobileNetV3-Large FPN, 320 px: COCO box mAP 22.8, 19.4 M parameters, 74 MB.
    "fasterrcnn-mobilenet-320": Backend("fasterrcnn_mobilenet_v3_large_320_fpn",
                                        "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1"),
    # SSDlite, MobileNetV3-Large, 320 px: COCO box mAP 21.3, 3.4 M parameters, 13 MB; faster on a CPU.
    "ssdlite-320": Backend("ssdlite320_mobilenet_v3_large", "SSDLite320_MobileNet_V3_Large_Weights.COCO_V1"),
}


# The open-vocabulary backend (wtours/stats/owlv2.py): OWLv2 through transformers, asked for a vocabulary's names.
OWLV2 = "owlv2"
OWLV2_MODEL = "google/owlv2-base-patch16-ensemble"  # Apache-2.0 weights on the Hugging Face Hub
# Default score thresholds: COCO detectors' softmax scores, OWLv2's per-class sigmoid scores (lower by design;
# 0.1 is the threshold of transformers' own OWLv2 example). docs/stats.md says more.
DEFAULT_SCORE_THRESHOLD = {"coco": 0.5, OWLV2: 0.1}


def detector_names() -> tuple[str, ...]:
    return (*BACKENDS, OWLV2)


@dataclass(frozen=True)
class DetectorParams(Checked):
    name: str = option("fasterrcnn-mobilenet-320", "Detector backend: torchvision (COCO weights) or owlv2 "
                       "(open vocabulary, LVIS v1's 1,203 classes by default).", option="--detector",
                       choices=detector_names)
    score_threshold: float | None = option(None, "Detections below this score are not counted (default: 0.5 for "
                                                 "COCO backends, 0.1 for owlv2).", range=FRACTION)
    nms_iou: float = option(0.5, "owlv2: of two boxes of one class overlapping by more than this IoU, only the "
                                 "higher-scoring one is counted.", range=FRACTION)
    vocabulary: Path | None = option(None, "owlv2: class names to look for, one per line (a tab and a threshold "
                                           "may follow a name; default: LVIS v1's 1,203 categories).",
                                     metavar="FILE")
    device: str = option("auto", "Where the detector (and TransNetV2, with --cuts transnetv2) runs.",
                         choices=("auto", "cpu", "cuda"))
    batch_size: int = option(8, "Frames per detector call.", range=Range(1, 4096))
    weights: Path | None = option(None, "Detector weights: a state dict file for the torchvision backends (default: "
                                        "torchvision's cache), a save_pretrained folder for owlv2 (default: "
                                        "huggingface_hub's cache).", metavar="PATH")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vocabulary is not None and self.name != OWLV2:  # checked even when no detector is loaded
            raise UsageError(f"--vocabulary applies to --detector {OWLV2}; {self.name} knows COCO's 80 classes only",
                             f"add --detector {OWLV2}, or leave --vocabulary out")

    @property
    def threshold(self) -> float:
        """The score threshold in force: the one given, else the backend's default."""
        if self.score_threshold is not None:
            return self.score_threshold
        return DEFAULT_SCORE_THRESHOLD[OWLV2 if self.name == OWLV2 else "coco"]


CUT_DETECTORS = ("builtin", "transnetv2")


@dataclass(frozen=True)
class CutParams(Checked):
    """Which cut detectors run and how their cuts are compared (docs/stats.md, "Two cut detectors")."""

    cuts: str = option("builtin", "Cut detectors: the built-in colour-histogram one, or TransNetV2 as well (a neural "
                                  "network; pip install 'wtours[cuts]'), with the two compared.", choices=CUT_DETECTORS)
    transnetv2_threshold: float = option(0.5, "TransNetV2 probability at which a frame ends a shot.", range=FRACTION)
    cut_tolerance: float = option(1.0, "Seconds within which a cut of each detector is the same cut.",
                                  range=NOT_NEGATIVE)


@dataclass(frozen=True)
class StatsConfig(Checked):
    analysis: AnalysisParams = field(default_factory=AnalysisParams)
    transitions: TransitionParams = field(default_factory=TransitionParams)
    cut_detectors: CutParams = field(default_factory=CutParams)
    classes: bool = option(True, "Count objects and classes with a detector.")
    detector: DetectorParams = field(default_factory=DetectorParams)
    out: Path | None = option(None, "Folder for <slug>/ outputs and the corpus table (default: <root>/stats).",
                              metavar="DIRECTORY")
    top: int = option(20, "Classes in the frequency plot and the summary's `top`.", range=AT_LEAST_1)
    chunk: int = option(500, "Frames per resume checkpoint.", range=AT_LEAST_1)  # the most a killed run loses
    overwrite: bool = option(False, "Start again instead of continuing an interrupted run.")
    progress: bool = True  # not an option: -q turns it off
