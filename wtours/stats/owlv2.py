"""OWLv2 (transformers' `Owlv2ForObjectDetection`) as an open-vocabulary `Detector`: the vocabulary's text
embeddings once per run, then batched image passes on the device, each box's best class kept when its score
reaches that class's threshold, and class-wise non-maximum suppression. Weights from huggingface_hub's cache
(downloaded there once) or a `save_pretrained` folder; transformers loads only for this backend."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wtours.errors import WtoursError
from wtours.stats.detections import Detections
from wtours.stats.params import OWLV2, OWLV2_MODEL, DetectorParams
from wtours.stats.vocabulary import Vocabulary, query_text, read_vocabulary
from wtours.system import resolve_device

PROMPT = "a photo of a {}"  # the query around each class name, as in transformers' OWLv2 examples
TEXT_BATCH = 256  # queries per text-model call while embedding the vocabulary (bounds its memory)


class Owlv2Detector:
    """An `Owlv2ForObjectDetection` and its processor, asked for every class of `vocabulary`."""

    def __init__(self, model: Any, processor: Any, vocabulary: Vocabulary, score_threshold: float,
                 nms_iou: float = 0.5, device: str = "cpu", weights: str = OWLV2_MODEL, revision: str | None = None):
        import torch

        self.model, self.processor, self.device = model.eval().to(device), processor, device
        self.classes = vocabulary.classes
        self.name, self.vocabulary, self.weights = OWLV2, vocabulary.label, weights
        self.score_threshold, self.nms_iou = score_threshold, nms_iou
        self.thresholds = torch.tensor(vocabulary.threshold_of(score_threshold), device=device)  # (Q,)
        self.queries = self._embed(vocabulary.classes)  # (Q, D): once per run, shared by every frame
        own = {name: t for name, t in zip(vocabulary.classes, vocabulary.thresholds) if t is not None}
        # What makes two runs comparable (summary.json `classes`, and the resume key).
        self.settings = {"model": weights, "revision": revision, "vocabulary_name": vocabulary.name,
                         "vocabulary_sha256": vocabulary.sha256, "vocabulary_classes": len(vocabulary.classes),
                         "prompt": PROMPT, "nms_iou": nms_iou, "class_thresholds": own}

    def _embed(self, names: Sequence[str]) -> Any:
        import torch

        length = self.model.config.text_config.max_position_embeddings  # 16 tokens for OWLv2
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(names), TEXT_BATCH):
                texts = [PROMPT.format(query_text(name)) for name in names[start:start + TEXT_BATCH]]
                tokens = self.processor(text=texts, return_tensors="pt", padding="max_length", truncation=True,
                                        max_length=length).to(self.device)
                chunks.append(self.model.owlv2.get_text_features(
                    input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output)  # (q, D)
        return torch.cat(chunks)  # (Q, D)

    def scores(self, frames: Sequence[np.ndarray]) -> tuple[Any, Any]:
        """(H, W, 3) uint8 frames -> per box the logit of every class (B, P, Q) and its box (B, P, 4: centre x,
        centre y, width, height in 0..1 of the frame padded to a square)."""
        import torch

        with torch.inference_mode():
            # Frames decoded into read-only buffers are copied: torch.from_numpy wants writable memory.
            images = [np.require(frame, requirements=["C", "W"]) for frame in frames]
            pixels = self.processor.image_processor(images=images, return_tensors="pt",
                                                    device=self.device)["pixel_values"]  # (B, 3, S, S)
            feature_map, _ = self.model.image_embedder(pixel_values=pixels)  # (B, S/16, S/16, C)
            batch, rows, columns, width = feature_map.shape
            features = feature_map.reshape(batch, rows * columns, width)  # (B, P, C): one box per patch
            queries = self.queries.unsqueeze(0).expand(batch, -1, -1)  # (B, Q, D)
            logits, _ = self.model.class_predictor(features, queries, None)  # (B, P, Q)
            boxes = self.model.box_predictor(features, feature_map)  # (B, P, 4)
        return logits, boxes

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        logits, boxes = self.scores(frames)
        found = []
        for frame_logits, frame_boxes in zip(logits, boxes):
            kept = select(frame_logits, frame_boxes, self.thresholds, self.nms_iou)
            found.append(Detections(tuple(self.classes[label] for label, _ in kept),
                                    tuple(round(score, 4) for _, score in kept)))
        return found


def select(logits: Any, boxes: Any, thresholds: Any, nms_iou: float) -> list[tuple[int, float]]:
    """One frame's boxes -> the (class index, score) of each one counted, highest score first: each box
    stands for its best-scoring class (score = sigmoid of the logit), is kept when that score reaches the
    class's threshold, and is dropped when it overlaps a higher-scoring box of its class by more than
    `nms_iou` (IoU). logits (P, Q), boxes (P, 4) centre x, centre y, width, height; thresholds (Q,)."""
    from torchvision.ops import batched_nms, box_convert

    scores, labels = logits.float().sigmoid().max(dim=-1)  # (P,), (P,)
    keep = scores >= thresholds[labels]
    scores, labels = scores[keep], labels[keep]
    corners = box_convert(boxes[keep].float(), "cxcywh", "xyxy")  # (K, 4)
    order = batched_nms(corners, scores, labels, nms_iou)  # survivors, highest score first
    return list(zip(labels[order].tolist(), scores[order].tolist()))


def load_owlv2(params: DetectorParams) -> Owlv2Detector:
    """OWLv2 with its weights and the vocabulary of `params`, its text embeddings computed: every way this
    can fail (no transformers, a bad vocabulary, weights neither cached nor downloadable) fails here,
    before a frame is read."""
    try:
        import torchvision  # noqa: F401  (its NMS)
        from transformers import Owlv2ForObjectDetection, Owlv2Processor
    except ImportError as e:
        raise WtoursError(f"--detector owlv2 needs transformers, torch and torchvision ({e})",
                          "pip install 'wtours[owlv2]', or pick a COCO --detector, or run with --no-classes") from e
    vocabulary = read_vocabulary(params.vocabulary)
    device = str(resolve_device(params.device))
    source = _weights_source(params.weights)
    try:
        processor = Owlv2Processor.from_pretrained(source)
        model = Owlv2ForObjectDetection.from_pretrained(source)
    except (OSError, ValueError) as e:  # transformers' answer to files neither cached nor downloadable
        raise _load_error(params.weights, e) from e
    revision = _cached_revision() if params.weights is None else None
    return Owlv2Detector(model, processor, vocabulary, params.threshold, params.nms_iou, device, source, revision)


def _cached_revision() -> str | None:
    """The commit of the model's files just loaded from huggingface_hub's cache: the snapshot folder's name."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(OWLV2_MODEL, "config.json")
    return Path(found).parent.name if isinstance(found, str) else None


def _weights_source(folder: Path | None) -> str:
    if folder is None:
        return OWLV2_MODEL
    if not (folder / "config.json").is_file():
        raise WtoursError(f"--weights {folder} is not a folder saved by save_pretrained (no config.json in it)",
                          f"pass the folder `hf download {OWLV2_MODEL} --local-dir DIR` wrote, or leave --weights "
                          "out to use huggingface_hub's cache")
    return str(folder)


def _load_error(folder: Path | None, error: Exception) -> WtoursError:
    text = str(error).strip()
    reason = text.splitlines()[0].split(". ")[0] if text else type(error).__name__  # transformers' first sentence
    if folder is not None:
        return WtoursError(f"cannot load OWLv2 from {folder} ({reason})",
                           f"pass --weights a complete copy of {OWLV2_MODEL} (`hf download {OWLV2_MODEL} "
                           "--local-dir DIR`: config, weights, processor and tokenizer files)")
    from huggingface_hub import constants

    return WtoursError(
        f"cannot load the OWLv2 weights {OWLV2_MODEL}: they are not in huggingface_hub's cache "
        f"({constants.HF_HUB_CACHE}) and could not be downloaded ({reason})",
        f"run once with internet to fill the cache (or `hf download {OWLV2_MODEL}`), or copy the model to this "
        f"machine and pass --weights DIR (e.g. from `hf download {OWLV2_MODEL} --local-dir DIR`); "
        "or pick a COCO --detector, or run with --no-classes")
