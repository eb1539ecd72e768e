"""Objects and classes per frame: the detector stage, the backend dispatch, the torchvision backends of
`params.BACKENDS` (COCO's 80 classes; docs/stats.md names their weights files) and the per-video class table.
torch and torchvision load only to count classes; the open-vocabulary backend lives in owlv2.py."""

from __future__ import annotations

import os
import pickle
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from wtours.errors import WtoursError
from wtours.layout import sha256_file
from wtours.stats.detections import Detections, Detector
from wtours.stats.params import BACKENDS, OWLV2, Backend, DetectorParams
from wtours.system import resolve_device

# Placeholders in torchvision's 91-entry COCO list (ids the 80 classes skip): never counted.
IGNORED_LABELS = frozenset({"__background__", "N/A"})
# torchvision publishes weights as <name>-<the first hex digits of the file's sha256>.pth
PUBLISHED_HASH = re.compile(r"-([0-9a-f]{6,64})\.[a-z]+$")
UNREADABLE = (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError)  # weights_only refusals too


class TorchDetector:
    """A torchvision-style detection model: list of (3, H, W) float tensors in 0..1 -> list of
    {"boxes", "labels", "scores"} dicts. Any such `nn.Module` can be injected (tests use a small one)."""

    def __init__(self, model: Any, categories: Sequence[str], name: str, vocabulary: str,
                 score_threshold: float = 0.5, device: str = "cpu", weights: str | None = None):
        self.model = model.eval().to(device)
        self.categories = list(categories)
        self.name, self.vocabulary, self.weights = name, vocabulary, weights
        self.score_threshold, self.device = score_threshold, device

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        import torch

        with torch.inference_mode():
            # (H, W, 3) uint8 -> (3, H, W) float on the device; the model resizes and normalises itself.
            batch = [torch.from_numpy(np.require(f, requirements=["C", "W"])).to(self.device)
                     .permute(2, 0, 1).float().div_(255) for f in frames]
            outputs = self.model(batch)
        return [self._keep(o["labels"].tolist(), o["scores"].tolist()) for o in outputs]

    def _keep(self, labels: list[int], scores: list[float]) -> Detections:
        kept = [(self.categories[label], score) for label, score in zip(labels, scores)
                if score >= self.score_threshold and self.categories[label] not in IGNORED_LABELS]
        return Detections(tuple(name for name, _ in kept), tuple(round(s, 4) for _, s in kept))


def detect_stage(items: Iterable[Any], detector: Detector, batch_size: int,
                 frame_of: Callable[[Any], np.ndarray]) -> Iterator[tuple[Any, Detections]]:
    """Batch items for the detector and hand each back with its detections, in order."""
    items = iter(items)
    while batch := list(islice(items, batch_size)):
        yield from zip(batch, detector.detect([frame_of(x) for x in batch]))


# ---------------------------------------------------------------- torchvision backends


def load_detector(params: DetectorParams) -> Detector:
    """The backend `params` names, ready to detect: weights and vocabulary are loaded here, before any frame."""
    if params.name == OWLV2:
        from wtours.stats.owlv2 import load_owlv2  # transformers loads only for this backend

        return load_owlv2(params)
    return load_coco_detector(params)


def load_coco_detector(params: DetectorParams) -> TorchDetector:
    """Build the named torchvision backend with its COCO weights (torchvision's cache, else a download)."""
    spec = BACKENDS[params.name]  # a known name: DetectorParams checked it
    try:
        import torch
        from torchvision.models import detection
    except ImportError as e:
        raise WtoursError(f"class counts need torch and torchvision ({e})",
                          "pip install 'wtours[train]' (torch, torchvision), or run with --no-classes") from e
    device = str(resolve_device(params.device))
    enum_name, member = spec.weights.split(".")
    weights = getattr(getattr(detection, enum_name), member)
    categories = weights.meta["categories"]
    # No weights through the builder: it would also fetch ImageNet backbone weights we overwrite anyway.
    model = getattr(detection, spec.builder)(weights=None, weights_backbone=None, num_classes=len(categories))
    state = _state_dict(torch, weights, spec, params.weights)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise WtoursError(f"the weights do not fit {spec.builder} ({str(e).splitlines()[0]})",
                          f"pass the COCO weights file {weights_file(weights)} (or another state dict of this "
                          "architecture) with --weights, or pick the matching --detector") from e
    counted = sum(name not in IGNORED_LABELS for name in categories)
    return TorchDetector(model, categories, params.name, f"COCO ({counted} classes)", params.threshold, device,
                         weights=str(params.weights) if params.weights else weights_file(weights))


def weights_file(weights: Any) -> str:
    return os.path.basename(weights.url)


def _state_dict(torch: Any, weights: Any, spec: Backend, path: Path | None) -> dict:
    if path is None:
        return cached_state_dict(torch, weights, spec.builder)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE as e:
        raise WtoursError(f"cannot read the weights file {path} ({str(e).splitlines()[0]})",
                          f"pass a state dict saved with torch.save, e.g. {weights_file(weights)}") from e


def cached_state_dict(torch: Any, weights: Any, builder: str) -> dict:
    """torchvision's `weights` the usual way, from the torch hub cache ($TORCH_HOME/hub/checkpoints), downloaded
    there the first time (torch checks the download against the hash in the file's name). A file already
    there, whoever put it, is checked against that hash too, and either is loaded with weights_only=True:
    tensors only, so a pickle in their place cannot run code."""
    name = weights_file(weights)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    published = PUBLISHED_HASH.search(name)
    where = (f"copy {name} (from {weights.url}) into {cached.parent}, where $TORCH_HOME/hub/checkpoints points "
             "(its sha256 is checked against its name)")
    if published and cached.is_file() and not sha256_file(cached).startswith(published.group(1)):
        raise WtoursError(f"the cached weights {cached} are not torchvision's file: their sha256 does not start "
                          f"with {published.group(1)}, as the published name says",
                          f"delete the file so that torchvision downloads it again, or {where}; or pass --weights FILE")
    was_cached = cached.is_file()
    try:
        # torchvision's own loader: load from the cache, downloading (hash-checked) to it the first time.
        return weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except UNREADABLE as e:  # URLError is an OSError; a bad hash a RuntimeError
        reason = str(getattr(e, "reason", None) or e).splitlines()[0]
        if was_cached:
            raise WtoursError(f"the cached weights {cached} cannot be read ({reason})",
                              "delete the file so that torchvision downloads it again, or pass --weights FILE") from e
        raise WtoursError(
            f"cannot load the COCO weights of the {builder} detector: {name} is not in {cached.parent} and "
            f"downloading it failed ({reason})",
            f"torchvision downloads it once into $TORCH_HOME/hub/checkpoints; on a machine without internet {where}, "
            "or pass --weights FILE; or skip class counts with --no-classes") from e


# ---------------------------------------------------------------- per-video table


def class_table(labels: Iterable[Sequence[str]]) -> list[dict[str, Any]]:
    """Per class: objects (instances), frames (frames showing it) and the share of frames; most frequent first."""
    per_frame = list(labels)
    objects = Counter(name for names in per_frame for name in names)
    frames = Counter(name for names in per_frame for name in set(names))
    rows = [{"name": name, "objects": objects[name], "frames": frames[name],
             "frame_share": round(frames[name] / len(per_frame), 6)} for name in objects]
    return sorted(rows, key=lambda r: (-r["frames"], -r["objects"], r["name"]))
