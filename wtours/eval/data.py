"""Labelled image folders (ROOT/<class>/<image>, torchvision's ImageFolder) and DINO's evaluation transform."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch
from torchvision import transforms
from torchvision.datasets import ImageFolder

from wtours.errors import UsageError
from wtours.models.registry import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)


class LabelledFolder(ImageFolder):
    """An ImageFolder whose class indices may be fixed by another folder's (a val set naming a subset of
    the train classes keeps the train indices)."""

    def __init__(self, root: str | os.PathLike, transform: Callable, class_to_idx: dict[str, int] | None = None):
        self._fixed = class_to_idx
        try:
            super().__init__(os.fspath(root), transform=transform)
        except FileNotFoundError as e:
            raise UsageError(f"{root} is not a labelled image folder ({e})",
                              "lay it out as ROOT/<class name>/<image>.jpg|png, one folder per class") from e

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes, mapping = super().find_classes(directory)
        if self._fixed is None:
            return classes, mapping
        unknown = sorted(set(classes) - self._fixed.keys())
        if unknown:
            raise UsageError(f"{directory} has classes the train folder lacks: {', '.join(unknown[:5])}",
                              "the val folder's class folders must be named as the train folder's")
        return classes, {c: self._fixed[c] for c in classes}

    @property
    def num_classes(self) -> int:
        return max(self.class_to_idx.values()) + 1

    def __getitem__(self, index: int) -> tuple[Any, int, str | None]:
        """(image tensor, class index, None), or (None, class index, path) for a file that does not decode (empty,
        truncated, not an image): skipped and counted by the caller, as the loaders skip a bad shard."""
        path, target = self.samples[index]
        try:
            image = self.transform(self.loader(path))  # always given: see __init__
        except Exception as e:  # noqa: BLE001 (PIL raises OSError, ValueError, SyntaxError, DecompressionBombError)
            log.debug("%s does not decode: %s", path, e)
            return None, target, path
        return image, target, None


def collate_readable(batch: list[tuple[Any, int, str | None]]) -> tuple[torch.Tensor | None, torch.Tensor, list[str]]:
    """A DataLoader batch of LabelledFolder items -> (images of the readable ones or None, their
    labels, the paths that did not decode)."""
    good = [(image, target) for image, target, bad in batch if bad is None]
    bad = [path for _, _, path in batch if path is not None]
    if not good:
        return None, torch.zeros(0, dtype=torch.long), bad
    return torch.stack([image for image, _ in good]), torch.tensor([t for _, t in good], dtype=torch.long), bad


def eval_view(resize: int = 256, crop: int = 224) -> Callable:
    """DINO's k-NN/linear eval view: short side to `resize` (bicubic), centre crop `crop`, ImageNet normalisation."""
    return transforms.Compose([
        transforms.Resize(resize, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(crop),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def augmented_view(crop: int = 224) -> Callable:
    """DINO's linear-probe train view (eval_linear.py): RandomResizedCrop (scale 0.08-1, bilinear), a horizontal
    flip with probability 0.5, ImageNet normalisation."""
    return transforms.Compose([
        transforms.RandomResizedCrop(crop),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def labelled_pair(train_dir: str | os.PathLike, val_dir: str | os.PathLike, resize: int = 256,
                  crop: int = 224, train_view: Callable | None = None) -> tuple[LabelledFolder, LabelledFolder]:
    """Train and val folders with the same class indices (the train folder's), seen through `eval_view`
    (the train folder through `train_view` where given)."""
    view = eval_view(resize, crop)
    train = LabelledFolder(train_dir, train_view or view)
    return train, LabelledFolder(val_dir, view, class_to_idx=train.class_to_idx)
