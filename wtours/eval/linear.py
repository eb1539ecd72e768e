"""DINO's linear probe of a frozen backbone (Caron et al. 2021, eval_linear.py; DoRA ships it unchanged as
eval/eval_linear.py: facebookresearch/dino, shashankvkt/DoRA_ICLR24). Protocol and formulas: docs/eval.md.

Features: the [CLS] tokens (final LayerNorm applied) of the last n blocks, concatenated; with avg-pooled patch
tokens (n = 1) the [CLS] token and the patch tokens' mean, interleaved as DINO's reshape lays them out. A linear
layer (weights N(0, 0.01), bias 0) learns them with cross-entropy: SGD, momentum 0.9, no weight decay, lr x global
batch / 256, decayed to 0 over the epochs by torch's CosineAnnealingLR stepped once per epoch. Train images are
RandomResizedCrop + flip views drawn anew every epoch (the "fast" mode computes each image's val-view features once
instead); val images are resized and centre-cropped. The probe folder keeps the last epoch's state, so a rerun
resumes; every epoch is seeded (seed + epoch), so a resumed probe ends as an uninterrupted one does."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset, TensorDataset

from wtours import distributed
from wtours.config import flagged
from wtours.errors import UsageError, WtoursError
from wtours.eval.config import FAST, LinearConfig
from wtours.eval.data import augmented_view, collate_readable, labelled_pair
from wtours.eval.knn import topk_hits
from wtours.layout import CHECKPOINT_FILE, RUN_CONFIG_FILE, RUN_LOG_FILE, write_bytes_atomic, write_json_atomic
from wtours.locks import folder_lock
from wtours.models.checkpoint import load_backbone, read_checkpoint, save_checkpoint
from wtours.models.vit import VisionTransformer

RESULT_FILE = "linear.json"
FAST_LABEL = "fast: features computed once with the val view, no augmentation (not the authors' protocol)"
PROTOCOL_LABEL = "the authors' protocol (DINO's eval_linear.py)"


def probe_features(backbone: VisionTransformer, images: torch.Tensor, n_last_blocks: int,
                   avgpool_patchtokens: bool) -> torch.Tensor:
    """(B, D x (n + avgpool)) features, as eval_linear.py's train/validate_network compute them."""
    layers = backbone.intermediate_layers(images, n_last_blocks)
    out = torch.cat([x[:, 0] for x in layers], dim=-1)
    if avgpool_patchtokens:  # DINO: cat((cls[..., None], mean[..., None]), -1).reshape(B, -1): interleaved
        out = torch.stack((out, layers[-1][:, 1:].mean(dim=1)), dim=-1).flatten(1)
    return out


def linear_layer(dim: int, classes: int) -> nn.Linear:
    """DINO's LinearClassifier: weights N(0, 0.01), bias 0."""
    layer = nn.Linear(dim, classes)
    nn.init.normal_(layer.weight, mean=0.0, std=0.01)
    nn.init.zeros_(layer.bias)
    return layer


def scaled_lr(config: LinearConfig, world_size: int) -> float:
    """The linear scaling rule: lr x (batch per process x processes) / 256."""
    return config.lr * config.batch_size * world_size / 256


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """The lr CosineAnnealingLR(T_max=epochs, eta_min=0) gives epoch `epoch` (0-based): its closed form."""
    return base * (1 + math.cos(math.pi * epoch / epochs)) / 2


Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class Features:
    """Turns an ImageFolder loader into (features, labels) batches on the device, naming the files that do not
    decode (skipped, as `eval knn` skips them; a batch with none readable is an empty batch, so every process
    still takes the same number of steps)."""

    def __init__(self, backbone: VisionTransformer, config: LinearConfig, device: torch.device, dim: int):
        self.backbone, self.config, self.device, self.dim = backbone, config, device, dim
        self.bad: set[str] = set()

    def loader(self, dataset, sampler=None) -> DataLoader:
        return DataLoader(dataset, batch_size=self.config.batch_size, sampler=sampler,
                          num_workers=self.config.workers, pin_memory=self.device.type == "cuda",
                          collate_fn=collate_readable)

    @torch.no_grad()
    def batches(self, loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, targets, unreadable in loader:
            self.bad.update(unreadable)
            if images is None:
                yield torch.zeros(0, self.dim, device=self.device), targets.to(self.device)
                continue
            features = probe_features(self.backbone, images.to(self.device, non_blocking=True),
                                      self.config.n_last_blocks, self.config.avgpool_patchtokens)
            yield features.float(), targets.to(self.device)

    def cached(self, dataset) -> TensorDataset:
        """Every readable image's features, computed once (the fast mode)."""
        parts = [(torch.zeros(0, self.dim, device=self.device), torch.zeros(0, dtype=torch.long, device=self.device))]
        parts += self.batches(self.loader(dataset))
        return TensorDataset(torch.cat([f for f, _ in parts]), torch.cat([t for _, t in parts]))


def tensor_batches(data: TensorDataset, order: Sequence[int], batch_size: int) -> Batches:
    """(features, labels) of cached features in `order`, `batch_size` at a time (the DataLoader's batches)."""
    index = torch.as_tensor(order, dtype=torch.long)
    return (tuple(t[chunk] for t in data.tensors) for chunk in index.split(batch_size))  # type: ignore[misc]


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Batches) -> float:
    """One pass of SGD on cross-entropy; the mean loss per image of this process."""
    model.train()
    total, count = 0.0, 0
    for features, labels in batches:
        loss = F.cross_entropy(model(features), labels, reduction="sum") / max(len(labels), 1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total, count = total + loss.item() * len(labels), count + len(labels)
    return total / max(count, 1)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, classes: int) -> torch.Tensor:
    """(images, top-1 hits, top-5 hits) of this process's val share (top-min(5, classes), ties to the lower class
    index, as `eval knn` counts them)."""
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64)
    for features, labels in batches:
        logits = model(features)
        counts += torch.tensor([len(labels), topk_hits(logits, labels, 1), topk_hits(logits, labels, min(5, classes))],
                               dtype=torch.float64)
    return counts


def default_out(checkpoint: str | os.PathLike) -> Path:
    return Path(checkpoint).resolve().with_name(f"{Path(checkpoint).resolve().stem}.linear")


def probe_settings(checkpoint: str | os.PathLike, config: LinearConfig, world_size: int) -> dict[str, Any]:
    """What shapes the result (a resumed probe must keep it): the settings but the free ones, absolute paths."""
    free = flagged(LinearConfig, "free")
    settings = {k: v for k, v in asdict(config).items() if k not in free}
    settings.update(train=os.path.abspath(config.train), val=os.path.abspath(config.val),
                    checkpoint=os.path.abspath(checkpoint), world_size=world_size)
    return settings


def resume_state(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The probe folder's checkpoint when it is this probe's (None: none there); another probe's, or a file that
    is not a probe checkpoint, is refused."""
    if not path.exists():
        return None
    state = read_checkpoint(path)
    hint = f"pass another --out, or remove {path.parent} to start afresh"
    if not (isinstance(state, dict) and isinstance(state.get("settings"), dict) and isinstance(state.get("epoch"), int)
            and isinstance(state.get("history"), list) and 0 < state["epoch"] == len(state["history"])
            and state["epoch"] <= settings["epochs"]):
        raise WtoursError(f"{path} is not a `wtours eval linear` checkpoint", hint)
    changed = sorted(k for k in settings.keys() | state["settings"].keys()
                     if settings.get(k) != state["settings"].get(k))
    if changed:
        raise UsageError(f"{path.parent} holds a probe with other settings ({', '.join(changed)}: "
                         f"{', '.join(repr(state['settings'].get(k)) for k in changed)} there)", hint)
    return state


def progress_line(entry: dict[str, Any], epochs: int) -> str:
    line = f"epoch {entry['epoch'] + 1}/{epochs}: loss {entry['train_loss']:.4f}, lr {entry['lr']:.6g}"
    if "top1" in entry:
        line += f", val top-1 {entry['top1']:.2f}%, top-5 {entry['top5']:.2f}% (best top-1 {entry['best_top1']:.2f}%)"
    return line


def result_line(result: dict[str, Any]) -> str:
    fast = " [fast mode: features computed once, no augmentation]" if result["mode"] == FAST else ""
    return (f"linear probe ({result['epochs']} epochs, {result['arch']} {result['key']}, n_last_blocks "
            f"{result['n_last_blocks']}{', avgpool' if result['avgpool_patchtokens'] else ''}) on "
            f"{result['val_images']} val / {result['train_images']} train images, {result['classes']} classes: "
            f"top-1 {result['top1']:.2f}%, top-5 {result['top5']:.2f}% (best top-1 {result['best_top1']:.2f}%)"
            f"{fast}" + (f"; {len(result['bad_images'])} images that do not decode skipped"
                         if result["bad_images"] else ""))


def linear_probe(checkpoint: str | os.PathLike, config: LinearConfig,
                 say: Callable[[str], None] = print) -> tuple[dict[str, Any], Path]:
    """`wtours eval linear`: train the probe (resuming the probe folder's), write linear.json; (result, its path)."""
    started = time.perf_counter()
    with distributed.setup(config.device) as dist, ExitStack() as held:
        device, fast = dist.device, config.mode == FAST
        tell = say if dist.is_main else (lambda line: None)
        backbone, arch = load_backbone(checkpoint, config.arch, config.key)
        if config.n_last_blocks > len(backbone.blocks):
            raise UsageError(f"--n-last-blocks {config.n_last_blocks}: {arch} has {len(backbone.blocks)} blocks",
                             f"pass --n-last-blocks 1 to {len(backbone.blocks)}")
        train, val = labelled_pair(config.train, config.val, config.resize, config.crop,
                                   None if fast else augmented_view(config.crop))
        out = Path(config.out) if config.out else default_out(checkpoint)
        settings = {**probe_settings(checkpoint, config, dist.world_size), "classes": train.num_classes}

        def prepare() -> dict[str, Any] | None:
            out.mkdir(parents=True, exist_ok=True)
            held.enter_context(folder_lock(out, "probe folder"))
            state = resume_state(out / CHECKPOINT_FILE, settings)
            write_json_atomic(out / RUN_CONFIG_FILE, asdict(config))  # `--config` of it runs the probe again
            return state

        state = distributed.agree(dist, prepare)
        backbone.to(device)
        dim = backbone.config.dim * (config.n_last_blocks + int(config.avgpool_patchtokens))
        torch.manual_seed(config.seed)
        head = linear_layer(dim, train.num_classes).to(device)
        model = head if dist.world_size == 1 else \
            DistributedDataParallel(head, device_ids=[device] if device.type == "cuda" else None)
        optimizer = torch.optim.SGD(head.parameters(), scaled_lr(config, dist.world_size), momentum=0.9,
                                    weight_decay=0)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs, eta_min=0)
        features = Features(backbone, config, device, dim)
        history: list[dict[str, Any]] = []
        if state is not None:
            try:
                head.load_state_dict(state["linear"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                history, features.bad = state["history"], set(state["bad_images"])
            except (KeyError, TypeError, ValueError, RuntimeError) as e:
                raise WtoursError(f"{out / CHECKPOINT_FILE} does not hold this probe's state ({type(e).__name__}: "
                                  f"{e})", f"pass another --out, or remove {out} to start afresh") from e
            if state["epoch"] < config.epochs:
                tell(f"resuming the probe in {out} after epoch {state['epoch']}/{config.epochs}")

        val_share: Subset = Subset(val, range(dist.rank, len(val), dist.world_size))
        if fast:
            tell(f"fast mode: computing the features of {len(train)} train and {len(val)} val images once")
            train_set: Any = features.cached(train)
            val_set = features.cached(val_share)
        else:
            train_set = train
        sampler: DistributedSampler = DistributedSampler(train_set, num_replicas=dist.world_size, rank=dist.rank,
                                                         seed=config.seed)

        def val_batches() -> Batches:
            return tensor_batches(val_set, range(len(val_set)), config.batch_size) if fast else \
                features.batches(features.loader(val_share))

        saved = time.monotonic()
        for epoch in range(len(history), config.epochs):
            torch.manual_seed(config.seed + epoch)  # the crops and the loader workers' seeds: a resume repeats them
            sampler.set_epoch(epoch)
            batches = tensor_batches(train_set, list(sampler), config.batch_size) if fast else \
                features.batches(features.loader(train_set, sampler))
            entry: dict[str, Any] = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
            entry["train_loss"] = sum(distributed.all_gather(train_epoch(model, optimizer, batches))) / dist.world_size
            scheduler.step()
            if all(path in features.bad for path, _ in train.samples):
                raise WtoursError(f"none of the {len(train)} images in {config.train} decodes",
                                  "check the folder: ROOT/<class name>/<image>.jpg|png, files that open in an image "
                                  "viewer")
            if (epoch + 1) % config.val_every == 0 or epoch == config.epochs - 1:
                counts = sum(distributed.all_gather(evaluate(head, val_batches(), train.num_classes)))
                entry.update(top1=100 * float(counts[1] / max(counts[0], 1)),
                             top5=100 * float(counts[2] / max(counts[0], 1)), val_images=int(counts[0]))
                entry["best_top1"] = max([entry["top1"]] + [h["top1"] for h in history if "top1" in h])
            history.append(entry)
            features.bad = set().union(*distributed.all_gather(features.bad))
            if dist.is_main and (epoch == config.epochs - 1 or time.monotonic() - saved >= config.save_every):
                saved = time.monotonic()
                save_checkpoint(out / CHECKPOINT_FILE, {
                    "linear": head.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "history": history,
                    "settings": settings, "bad_images": sorted(features.bad)})
                write_bytes_atomic(out / RUN_LOG_FILE, "".join(json.dumps(h) + "\n" for h in history).encode())
            tell(progress_line(entry, config.epochs))

        last = history[-1]
        result = {**asdict(config), "checkpoint": str(checkpoint), "arch": arch, "out": str(out),
                  "mode_label": FAST_LABEL if fast else PROTOCOL_LABEL, "world_size": dist.world_size,
                  "global_batch": config.batch_size * dist.world_size,
                  "scaled_lr": scaled_lr(config, dist.world_size), "top1": last["top1"], "top5": last["top5"],
                  "best_top1": last["best_top1"], "classes": train.num_classes,
                  "train_images": sum(path not in features.bad for path, _ in train.samples),
                  "val_images": last["val_images"], "bad_images": sorted(features.bad),
                  "device": str(device), "seconds": time.perf_counter() - started}
        if dist.is_main:
            write_json_atomic(out / RESULT_FILE, result)
        return result, out / RESULT_FILE


def short_probe(backbone: VisionTransformer, train, val, epochs: int, device: torch.device,
                config: LinearConfig) -> dict[str, Any]:
    """The trainer's probe, in this process: the fast mode (features computed once with the val view) for
    `epochs` epochs, otherwise `config`'s settings (train and val are `labelled_pair`'s); top-1/top-5 in percent."""
    dim = backbone.config.dim * (config.n_last_blocks + int(config.avgpool_patchtokens))
    features = Features(backbone, config, device, dim)
    train_set, val_set = features.cached(train), features.cached(val)
    for data, folder in ((train_set, train), (val_set, val)):
        if not len(data):
            raise WtoursError(f"no image of {folder.root} decodes", "check the folder: ROOT/<class>/<image>")
    torch.manual_seed(config.seed)
    head = linear_layer(dim, train.num_classes).to(device)
    optimizer = torch.optim.SGD(head.parameters(), scaled_lr(config, 1), momentum=0.9, weight_decay=0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs, eta_min=0)
    order = torch.Generator().manual_seed(config.seed)
    with torch.enable_grad():
        for _ in range(epochs):
            shuffled = torch.randperm(len(train_set), generator=order).tolist()
            train_epoch(head, optimizer, tensor_batches(train_set, shuffled, config.batch_size))
            scheduler.step()
    counts = evaluate(head, tensor_batches(val_set, range(len(val_set)), config.batch_size), train.num_classes)
    images = max(float(counts[0]), 1.0)
    return {"top1": 100 * float(counts[1]) / images, "top5": 100 * float(counts[2]) / images,
            "epochs": epochs, "mode": FAST, "bad_images": len(features.bad)}
