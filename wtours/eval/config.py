"""The evaluations' settings (no torch import: `wtours eval knn` and `eval linear` derive their options from them)."""

from __future__ import annotations

from dataclasses import dataclass

from wtours.config import POSITIVE, Checked, Range, option
from wtours.errors import UsageError
from wtours.models.registry import vit_names

IMAGE_SIDE = Range(16, 4096)  # pixels of the resize and the crop


@dataclass(frozen=True)
class KnnConfig(Checked):
    k: int = option(20, "Neighbours voting for each val image.", range=Range(1, 100_000))
    temperature: float = option(0.07, "Vote weight exp(cosine / T).", range=POSITIVE)
    resize: int = option(256, "Short side the images are resized to.", range=IMAGE_SIDE)
    crop: int = option(224, "Side of the centre crop.", range=IMAGE_SIDE)
    batch_size: int = option(128, "Images per forward pass.", range=Range(1, 1 << 16))  # DINO's per-GPU default
    workers: int | None = option(None, "Image-decoding processes (default: one per usable CPU, as `wtours train`; 0: "
                                       "in this process).", range=Range(0, 1024))
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


FAST = "fast"  # features computed once, without augmentation: a quicker probe, not the authors' protocol


@dataclass(frozen=True)
class LinearConfig(Checked):
    """`wtours eval linear`: the defaults are DINO's eval_linear.py, which DoRA ships as its eval/eval_linear.py
    (facebookresearch/dino, shashankvkt/DoRA_ICLR24); the "free" settings may change when a probe resumes."""

    train: str = option(help="Labelled images: DIR/<class>/<image>.", metavar="DIR", path=True)
    val: str = option(help="Held-out images, class folders named as in --train.", metavar="DIR", path=True)
    out: str | None = option(None, "Probe folder: checkpoint.pth, log.jsonl, linear.json (default: beside "
                                   "CHECKPOINT, NAME.linear/); a rerun resumes there.", metavar="DIR",
                             free=True, path=True)
    key: str = option("teacher", "Which network of a training checkpoint.", choices=("teacher", "student"))
    arch: str | None = option(None, "Default: inferred from the weights' shapes.", choices=vit_names)
    epochs: int = option(100, "Epochs; the cosine decays the lr to 0 over them.", range=Range(1, 100_000))
    lr: float = option(0.001, "Learning rate for a global batch of 256, scaled by global batch / 256.",
                       range=Range(0, 1e3, open_low=True))
    batch_size: int = option(128, "Images per process (global batch: x processes).", range=Range(1, 1 << 16))
    n_last_blocks: int = option(4, "Concatenate the [CLS] tokens of this many last blocks (authors: 4 for ViT-S, "
                                   "1 for ViT-B).", range=Range(1, 64))
    avgpool_patchtokens: bool = option(False, "Also the average of the last block's patch tokens (authors: for "
                                              "ViT-B; needs --n-last-blocks 1).")
    mode: str = option("protocol", "protocol: the authors' (augmented crops, the backbone run every epoch); fast: "
                                   "features computed once with the val view, no augmentation (labelled as such).",
                       choices=("protocol", FAST))
    val_every: int = option(1, "Epochs between val evaluations (and the last epoch).", range=Range(1, 100_000),
                            free=True)
    save_every: float = option(60.0, "Seconds between probe checkpoints (0: after every epoch, as the authors' "
                                     "code); the last epoch is always saved.", range=Range(0, 1e9), free=True)
    seed: int = option(0, "Seeds the linear layer, the sampling order and the crops.", range=Range(0, 2**32 - 1))
    resize: int = option(256, "Val: short side the images are resized to.", range=IMAGE_SIDE)
    crop: int = option(224, "Side of the val centre crop and of the train random crop.", range=IMAGE_SIDE)
    workers: int = option(4, "Image-decoding processes per process.", range=Range(0, 1024), free=True)
    device: str | None = option(None, "cuda, cuda:1 or cpu (default: cuda when available; one GPU per process "
                                      "under torchrun/srun).", free=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.avgpool_patchtokens and self.n_last_blocks != 1:
            raise UsageError(f"--avgpool-patchtokens with --n-last-blocks {self.n_last_blocks}: the authors' code "
                             "pools patch tokens beside one block's [CLS] only",
                             "pass --n-last-blocks 1 (their ViT-B setting), or leave out --avgpool-patchtokens")
