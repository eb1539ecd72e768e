"""The k-NN evaluation's settings (no torch import: `wtours eval knn` derives its options from them)."""

from __future__ import annotations

from dataclasses import dataclass

from wtours.config import POSITIVE, Checked, Range, option

IMAGE_SIDE = Range(16, 4096)  # pixels of the resize and the crop


@dataclass(frozen=True)
class KnnConfig(Checked):
    k: int = option(20, "Neighbours voting for each val image.", range=Range(1, 100_000))
    temperature: float = option(0.07, "Vote weight exp(cosine / T).", range=POSITIVE)
    resize: int = option(256, "Short side the images are resized to.", range=IMAGE_SIDE)
    crop: int = option(224, "Side of the centre crop.", range=IMAGE_SIDE)
    batch_size: int = option(128, "Images per forward pass.", range=Range(1, 1 << 16))  # DINO's per-GPU default
    workers: int = option(0, "Image-decoding processes (0: in this process).", range=Range(0, 1024))
    chunk: int = option(256, "Val images per similarity block.", range=Range(1, 1 << 20))  # memory: chunk x train set


@dataclass(frozen=True)
class DavisConfig(Checked):
    """DINO's label propagation (eval_video_segmentation.py); its defaults are DINO's."""

    n_last_frames: int = option(7, "Previous frames used besides the first.", range=Range(1, 1000))
    size_mask_neighborhood: int = option(12, "Patches around a query a source may be (0: anywhere).",
                                         range=Range(0, 10_000))
    topk: int = option(5, "Most similar source patches voting for a query patch.", range=Range(1, 10_000))
    temperature: float = option(0.1, "Affinity exp(cosine / T).", range=POSITIVE)
    short_side: int = option(480, "Short side frames are resized to (the long side to a multiple of 64).",
                             range=Range(64, 4096))
