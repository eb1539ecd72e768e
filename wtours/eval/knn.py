"""DINO's weighted k-NN evaluation of a frozen backbone (Caron et al. 2021, eval_knn.py).

Features are the backbone's [CLS] token, L2-normalised. Each val image votes with its k most similar train images
(cosine similarity s), each weighted exp(s / T); a class's score is the sum of its neighbours' weights. Top-1 / top-5
are the shares of val images whose class is among the 1 / 5 best-scored classes (ties go to the lower class index)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from wtours.errors import WtoursError
from wtours.eval.config import KnnConfig
from wtours.eval.data import LabelledFolder, collate_readable, labelled_pair
from wtours.layout import write_json_atomic
from wtours.models.checkpoint import load_backbone
from wtours.system import default_workers, resolve_device

log = logging.getLogger(__name__)


@dataclass
class KnnResult:
    top1: float  # percent
    top5: float  # percent (top-min(5, classes))
    k: int  # neighbours used (k, or the train set's size when smaller)
    temperature: float
    classes: int
    train_images: int  # readable images used
    val_images: int
    seconds: float
    bad_images: list[str] = field(default_factory=list)  # files that do not decode: skipped, named


MAX_NAMED = 10  # bad images named one by one in the log; the rest are counted


PROGRESS_EVERY_S = 10.0  # seconds between progress lines while features are extracted (and one at the end)


def knn_workers(config: KnnConfig) -> int:
    """--workers, else one image-decoding process per usable CPU (affinity, SLURM), as `wtours train` takes."""
    return config.workers if config.workers is not None else default_workers()


@torch.no_grad()
def extract_features(backbone: nn.Module, dataset: LabelledFolder, config: KnnConfig, device: torch.device | str,
                     say: Callable[[str], None] | None = None,
                     what: str = "images") -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(N, D) L2-normalised [CLS] features and (N,) labels of the images that decode, in the dataset's
    order, on `device`, and the files that do not: skipped and warned about by name; none decoding at
    all is an error. `say` gets a progress line (`what`: done/total images, rate) every PROGRESS_EVERY_S
    seconds and at the end."""
    device = torch.device(device)
    loader: DataLoader = DataLoader(dataset, batch_size=config.batch_size, shuffle=False,
                                    num_workers=knn_workers(config), pin_memory=device.type == "cuda",
                                    collate_fn=collate_readable)
    features: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    skipped: list[str] = []
    started = last_said = time.perf_counter()
    done = 0
    for images, targets, unreadable in loader:
        done += len(unreadable) + (0 if images is None else len(images))
        now = time.perf_counter()
        if say is not None and (now - last_said >= PROGRESS_EVERY_S or done == len(dataset)):
            say(f"{what}: {done}/{len(dataset)} images, {done / max(now - started, 1e-9):.1f} images/s")
            last_said = now
        for path in unreadable:
            if len(skipped) < MAX_NAMED:
                log.warning("skipping an image that does not decode (empty, truncated or not an image): %s", path)
            skipped.append(path)
        if images is None:
            continue
        cls = backbone(images.to(device, non_blocking=True)).float()  # (B, D)
        features.append(F.normalize(cls, dim=1, p=2))
        labels.append(targets.to(device))
    if len(skipped) > MAX_NAMED:
        log.warning("skipped %d images of %s that do not decode (first %d named above)", len(skipped), dataset.root,
                    MAX_NAMED)
    if not features:
        raise WtoursError(f"none of the {len(dataset)} images in {dataset.root} decodes (first: {skipped[0]})"
                          if skipped else f"{dataset.root} holds no images",
                          "check the folder: ROOT/<class name>/<image>.jpg|png, files that open in an image viewer")
    return torch.cat(features), torch.cat(labels), skipped


@torch.no_grad()
def weighted_knn_scores(train_features: torch.Tensor, train_labels: torch.Tensor, val_features: torch.Tensor,
                        k: int, temperature: float, num_classes: int, chunk: int = 256) -> torch.Tensor:
    """(V, C) class scores: for each val row, sum over its top-k train neighbours of exp(cosine / T)."""
    k = min(k, len(train_features))
    scores = []
    for start in range(0, len(val_features), chunk):
        similarity = val_features[start:start + chunk] @ train_features.T  # (v, N_train), cosine: rows are unit
        nearest, index = similarity.topk(k, dim=1)  # (v, k)
        weights = (nearest / temperature).exp()
        block = torch.zeros(len(index), num_classes, device=val_features.device, dtype=weights.dtype)
        scores.append(block.scatter_add_(1, train_labels[index], weights))  # (v, C)
    return torch.cat(scores) if scores else torch.zeros(0, num_classes, device=val_features.device)


def topk_hits(scores: torch.Tensor, labels: torch.Tensor, k: int) -> int:
    """How many rows have their label among the k best-scored classes (stable: ties go to the lower index)."""
    ranking = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]  # (V, k)
    return int((ranking == labels[:, None]).any(dim=1).sum())


def evaluate_knn(backbone: nn.Module, train: LabelledFolder, val: LabelledFolder, config: KnnConfig = KnnConfig(),
                 device: torch.device | str = "cpu", say: Callable[[str], None] | None = None) -> KnnResult:
    """Top-1/top-5 of DINO's weighted k-NN; the backbone runs in eval mode and is restored afterwards. `say`: progress
    lines (extract_features)."""
    started = time.perf_counter()
    if config.k > len(train):
        log.warning("k = %d is more than the %d train images: using k = %d", config.k, len(train), len(train))
    was_training = backbone.training
    backbone.eval()
    try:
        if say is not None:
            say(f"k-NN: features of {len(train)} train and {len(val)} val images on {device}, "
                f"{knn_workers(config)} decoding worker(s)")
        train_features, train_labels, train_bad = extract_features(backbone, train, config, device, say, "train")
        val_features, val_labels, val_bad = extract_features(backbone, val, config, device, say, "val")
    finally:
        backbone.train(was_training)
    classes = train.num_classes
    scores = weighted_knn_scores(train_features, train_labels, val_features, config.k, config.temperature, classes,
                                 config.chunk)
    n = max(len(val_features), 1)
    return KnnResult(top1=100.0 * topk_hits(scores, val_labels, 1) / n,
                     top5=100.0 * topk_hits(scores, val_labels, min(5, classes)) / n,
                     k=min(config.k, len(train_features)), temperature=config.temperature, classes=classes,
                     train_images=len(train_features), val_images=len(val_features),
                     seconds=time.perf_counter() - started, bad_images=train_bad + val_bad)


def knn_checkpoint(checkpoint: str | os.PathLike, train_dir: str | os.PathLike, val_dir: str | os.PathLike,
                   config: KnnConfig = KnnConfig(), out: str | os.PathLike | None = None, arch: str | None = None,
                   which: str = "teacher", device: str | None = None,
                   say: Callable[[str], None] | None = None) -> tuple[KnnResult, Path]:
    """`wtours eval knn`: load the backbone, evaluate (`say`: progress lines), write the result json (default: beside
    the checkpoint)."""
    where = resolve_device(device)
    backbone, arch = load_backbone(checkpoint, arch, which)
    train, val = labelled_pair(train_dir, val_dir, config.resize, config.crop)
    result = evaluate_knn(backbone.to(where), train, val, config, where, say)
    out = Path(out) if out else Path(checkpoint).resolve().with_name(f"{Path(checkpoint).resolve().stem}.knn.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, {"checkpoint": str(checkpoint), "arch": arch, "which": which,
                            "train": str(train_dir), "val": str(val_dir), "resize": config.resize,
                            "crop": config.crop, "device": str(where), **asdict(result)})
    return result, out


def result_line(result: KnnResult) -> str:
    return (f"k-NN (k={result.k}, T={result.temperature:g}) on {result.val_images} val / {result.train_images} "
            f"train images, {result.classes} classes: top-1 {result.top1:.2f}%, top-5 {result.top5:.2f}% "
            f"({result.seconds:.1f} s)"
            + (f"; {len(result.bad_images)} images that do not decode skipped" if result.bad_images else ""))
