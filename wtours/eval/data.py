"""Labelled image folders (ROOT/<class>/<image>, torchvision's ImageFolder) and DINO's evaluation transform."""

from __future__ import annotations

import os
from typing import Callable

from torchvision import transforms
from torchvision.datasets import ImageFolder

from wtours.clips.augment import IMAGENET_MEAN, IMAGENET_STD
from wtours.errors import WtoursError


def eval_transform(resize: int = 256, crop: int = 224) -> Callable:
    """DINO's k-NN/linear eval view: short side to `resize` (bicubic), centre crop `crop`, ImageNet normalisation."""
    return transforms.Compose([
        transforms.Resize(resize, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(crop),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class LabelledFolder(ImageFolder):
    """An ImageFolder whose class indices may be fixed by another folder's (a val set naming a subset of
    the train classes keeps the train indices)."""

    def __init__(self, root: str | os.PathLike, transform: Callable, class_to_idx: dict[str, int] | None = None):
        self._fixed = class_to_idx
        try:
            super().__init__(os.fspath(root), transform=transform)
        except FileNotFoundError as e:
            raise WtoursError(f"{root} is not a labelled image folder ({e})",
                              "lay it out as ROOT/<class name>/<image>.jpg|png, one folder per class") from e

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes, mapping = super().find_classes(directory)
        if self._fixed is None:
            return classes, mapping
        unknown = sorted(set(classes) - self._fixed.keys())
        if unknown:
            raise WtoursError(f"{directory} has classes the train folder lacks: {', '.join(unknown[:5])}",
                              "the val folder's class folders must be named as the train folder's")
        return classes, {c: self._fixed[c] for c in classes}

    @property
    def num_classes(self) -> int:
        return max(self.class_to_idx.values()) + 1


def labelled_pair(train_dir: str | os.PathLike, val_dir: str | os.PathLike, resize: int = 256,
                  crop: int = 224) -> tuple[LabelledFolder, LabelledFolder]:
    """Train and val folders with the same class indices (the train folder's)."""
    transform = eval_transform(resize, crop)
    train = LabelledFolder(train_dir, transform)
    return train, LabelledFolder(val_dir, transform, class_to_idx=train.class_to_idx)
