"""Semi-supervised video object segmentation on DAVIS-2017 by label propagation, as DINO's
eval_video_segmentation.py does it (github.com/facebookresearch/dino), scored with J and F as the official
davis2017-evaluation code scores it (wtours/eval/jf.py). docs/eval.md gives the protocol step by step.

Each frame (cv2, BGR -> RGB) is resized to a short side of 480 with the long side floored to a multiple of 64,
normalised with DINO's mean and std, and its patch tokens of the last block (after the final norm) are its
features. The first frame's annotation, shrunk to the patch grid (nearest), is one-hot; each later frame takes
its labels from the first frame and the `n_last_frames` frames before it: affinities exp(cosine / 0.1) to their
patches within `size_mask_neighborhood` patches, the `topk` largest over all those sources kept and normalised
to sum to 1, the sources' (soft) labels averaged with them. The result is upsampled (bilinear, x patch size),
each channel rescaled to [0, 1], argmax'ed, resized to the frame's size (nearest) and written as an indexed PNG
with DAVIS's palette, OUT/<sequence>/<frame>.png: the layout the official evaluation reads."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from wtours.errors import UsageError, WtoursError
from wtours.eval.config import DavisConfig
from wtours.eval.jf import VOID, sequence_measures, statistics
from wtours.layout import TEMPORARY_GLOB, read_json, write_json_atomic
from wtours.locks import folder_lock
from wtours.models.checkpoint import load_backbone
from wtours.models.vit import VisionTransformer
from wtours.system import resolve_device

log = logging.getLogger(__name__)

DINO_MEAN, DINO_STD = (0.485, 0.456, 0.406), (0.228, 0.224, 0.225)  # eval_video_segmentation.py color_normalize
LAYOUT_HINT = ("lay DAVIS-2017 out as DIR/JPEGImages/480p/<sequence>/<frame>.jpg, DIR/Annotations/480p/<sequence>/"
               "<frame>.png (indexed PNGs, one per frame) and DIR/ImageSets/2017/<set>.txt (one sequence a line), "
               "as DAVIS-2017-trainval-480p.zip unpacks")
RESULT_FILE, RUN_FILE = "davis.json", "run.json"


def davis_palette() -> list[int]:
    """The PASCAL VOC colour map DAVIS's annotations use (davis2017-evaluation davis2017/utils.py color_map):
    bit k of a label goes to bit 7 - k // 3 of red, green or blue (k % 3)."""
    palette = []
    for label in range(256):
        rgb = [0, 0, 0]
        for bit in range(24):
            if label >> bit & 1:
                rgb[bit % 3] |= 1 << 7 - bit // 3
        palette += rgb
    return palette


PALETTE = davis_palette()


@dataclass
class Sequence:
    name: str
    frames: list[Path]  # the .jpg files, sorted by name
    annotations: list[Path]  # the .png of each frame, same stem


def read_layout(root: str | os.PathLike, subset: str = "val", only: tuple[str, ...] = ()) -> list[Sequence]:
    """The sequences ImageSets/2017/<subset>.txt lists (`only` those, where given), checked before any work: every
    frame annotated with an indexed (palette) PNG of the frame's size, one size per sequence, at least 3 frames (J
    and F leave out the first and the last). A folder that is not DAVIS's is a usage error; a DAVIS folder lacking
    something, a runtime one, naming what is missing."""
    root = Path(root)
    if not subset or subset.startswith(".") or "/" in subset or "\\" in subset:
        raise UsageError(f"--image-set {subset!r} is not a name", "name a list of ImageSets/2017, e.g. val or train")
    images, annotations = root / "JPEGImages" / "480p", root / "Annotations" / "480p"
    listing = root / "ImageSets" / "2017" / f"{subset}.txt"
    missing = [str(p) for p in (images, annotations, listing) if not p.exists()]
    if missing:
        raise UsageError(f"{root} is not a DAVIS-2017 folder: missing {', '.join(missing)}", LAYOUT_HINT)
    names = list(dict.fromkeys(line.strip() for line in listing.read_text(errors="replace").splitlines()
                               if line.strip()))
    odd = [n for n in names if n.startswith(".") or "/" in n or "\\" in n]
    if odd or not names:
        raise WtoursError(f"{listing} lists no sequence" if not names else
                          f"{listing} lists {odd[0]!r}, not a sequence folder name", LAYOUT_HINT)
    unlisted = [n for n in only if n not in names]
    if unlisted:
        raise UsageError(f"{listing} does not list {', '.join(unlisted[:5])}", f"name sequences it lists, e.g. "
                         f"{', '.join(names[:3])}")
    names = [n for n in names if n in only] if only else names
    absent = [n for n in names if not (images / n).is_dir()]
    if absent:
        raise WtoursError(f"{listing} lists {len(absent)} sequences that {images} lacks: {', '.join(absent[:5])}",
                          f"unpack the whole DAVIS-2017 set there, or list only the sequences you have; {LAYOUT_HINT}")
    sequences = [Sequence(n, frames := sorted((images / n).glob("*.jpg")),
                          [annotations / n / f"{f.stem}.png" for f in frames]) for n in names]
    for sequence in sequences:
        check_sequence(sequence)
    return sequences


def check_sequence(sequence: Sequence) -> None:
    if len(sequence.frames) < 3:
        raise WtoursError(f"sequence {sequence.name} has {len(sequence.frames)} frames (.jpg): J and F need at "
                          "least 3 (the first and the last are not scored)", LAYOUT_HINT)
    lacking = [p for p in sequence.annotations if not p.is_file()]
    if lacking:
        raise WtoursError(f"sequence {sequence.name}: {len(lacking)} of its {len(sequence.frames)} frames have no "
                          f"annotation (first: {lacking[0]})", LAYOUT_HINT)
    size = None
    for frame, annotation in zip(sequence.frames, sequence.annotations):
        for path, kind in ((frame, "frame"), (annotation, "annotation")):
            try:
                with Image.open(path) as image:
                    mode, shape = image.mode, image.size
            except (OSError, UnidentifiedImageError) as e:
                raise WtoursError(f"{path} does not open as an image ({e})", LAYOUT_HINT) from e
            size = size or shape
            if shape != size:
                raise WtoursError(f"{path}: this {kind} is {shape[0]} x {shape[1]}, sequence {sequence.name}'s "
                                  f"first frame {size[0]} x {size[1]}", "every frame and annotation of a sequence "
                                  "has one size: use the 480p frames and annotations together")
            if kind == "annotation" and mode != "P":
                raise WtoursError(f"{path} is a {mode} image, not an indexed (palette) PNG",
                                  "annotations are indexed PNGs whose pixel values are object ids (0 background), "
                                  "as DAVIS ships them; convert colour masks to indices first")
    first = read_labels(sequence.annotations[0])
    if not np.any((first > 0) & (first != VOID)):
        raise WtoursError(f"{sequence.annotations[0]}: the first annotation of sequence {sequence.name} marks no "
                          "object (all pixels 0 or void, 255)", "the first frame's annotation gives the objects "
                          "to segment: label them 1, 2, ...")


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """DINO's read_frame size: the short side to `short_side`, the long one scaled and floored to a multiple of 64."""
    if height > width:
        return int(short_side * height / width // 64 * 64), short_side
    return short_side, int(short_side * width / height // 64 * 64)


def read_frame(path: Path, short_side: int) -> torch.Tensor:
    """(3, H, W): DINO's read_frame (cv2 bilinear resize, RGB in [0, 1], its mean and std)."""
    image = cv2.imread(str(path))
    if image is None:
        raise WtoursError(f"{path} does not decode as an image", "replace it with the frame from the DAVIS archive")
    height, width = resized_shape(image.shape[0], image.shape[1], short_side)
    rgb = cv2.resize(image, (width, height))[:, :, ::-1].astype(np.float32) / 255.0
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    return (x - torch.tensor(DINO_MEAN)[:, None, None]) / torch.tensor(DINO_STD)[:, None, None]


def read_labels(path: Path) -> np.ndarray:
    """An annotation's or a result's label map, as the official code reads it (np.array(Image.open))."""
    with Image.open(path) as image:
        return np.array(image)


def write_labels(path: Path, labels: np.ndarray) -> None:
    """An indexed PNG with DAVIS's palette (DINO's imwrite_indexed)."""
    image = Image.fromarray(labels.astype(np.uint8))
    image.putpalette(PALETTE)
    image.save(path, format="PNG")


def neighbourhood(h: int, w: int, size: int) -> torch.Tensor:
    """(h*w, h*w): 1 where the source patch (column) is within `size` rows and columns of the query (row)."""
    i, j = (t.flatten() for t in torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"))
    return (((i[:, None] - i[None]).abs() <= size) & ((j[:, None] - j[None]).abs() <= size)).float()


def propagate(target: torch.Tensor, sources: list[torch.Tensor], labels: list[torch.Tensor],
              mask: torch.Tensor | None, config: DavisConfig) -> torch.Tensor:
    """DINO's label_propagation: target (N, D) patch features, sources [(N, D)] with their labels [(C, h, w)]
    -> the target's (C, h, w) soft labels. topk is capped at the number of source patches (DINO's would fail)."""
    c, h, w = labels[0].shape
    keys = F.normalize(torch.stack(sources), dim=2)  # (S, N, D)
    affinity = torch.exp(F.normalize(target, dim=1) @ keys.transpose(1, 2) / config.temperature)  # (S, query, key)
    if mask is not None:
        affinity = affinity * mask
    affinity = affinity.transpose(2, 1).reshape(-1, h * w)  # (S * key, query)
    kth = affinity.topk(min(config.topk, len(affinity)), dim=0).values.min(dim=0).values
    affinity = affinity.masked_fill(affinity < kth, 0)
    affinity = affinity / affinity.sum(dim=0, keepdim=True)
    votes = torch.stack(labels).reshape(len(labels), c, -1).transpose(2, 1).reshape(-1, c).T  # (C, S * key)
    return (votes @ affinity).reshape(c, h, w)


def propagate_sequence(features: Iterable[torch.Tensor], first_labels: torch.Tensor,
                       config: DavisConfig) -> Iterator[torch.Tensor]:
    """DINO's eval_video_tracking_davis loop: features of frame 0, 1, ... (N, D); first_labels (C, h, w) one-hot;
    yields the soft labels of frames 1, 2, ..., each from frame 0 and the n_last_frames before it."""
    frames = iter(features)
    first = next(frames)
    recent: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=config.n_last_frames)
    _, h, w = first_labels.shape
    mask = (neighbourhood(h, w, config.size_mask_neighborhood).to(first.device)
            if config.size_mask_neighborhood > 0 else None)
    for target in frames:
        labels = propagate(target, [first, *(f for f, _ in recent)], [first_labels, *(s for _, s in recent)],
                           mask, config)
        recent.append((target, labels))
        yield labels


def hard_labels(soft: torch.Tensor, patch: int, height: int, width: int) -> np.ndarray:
    """DINO's upsampling: bilinear x patch, each channel with a positive maximum rescaled to [0, 1] (norm_mask),
    the argmax, resized to height x width (PIL nearest)."""
    up = F.interpolate(soft[None], scale_factor=patch, mode="bilinear", align_corners=False)[0]
    low, high = up.amin(dim=(1, 2), keepdim=True), up.amax(dim=(1, 2), keepdim=True)
    up = torch.where(high > 0, (up - low) / (high - low), up)
    labels = torch.max(up, dim=0).indices.to(torch.uint8).cpu().numpy()
    return np.array(Image.fromarray(labels).resize((width, height), Image.Resampling.NEAREST))


@torch.no_grad()
def segment_sequence(backbone: VisionTransformer, sequence: Sequence, config: DavisConfig,
                     device: torch.device, folder: Path) -> None:
    """Write the sequence's label maps into `folder`: frame 0's annotation as it is, then the propagated ones."""
    patch = backbone.config.patch_size

    def features(path: Path) -> torch.Tensor:
        return backbone.forward_last_attention(read_frame(path, config.short_side)[None].to(device)).tokens[0, 1:]

    annotation = read_labels(sequence.annotations[0])
    height, width = annotation.shape
    grid_h, grid_w = (side // patch for side in resized_shape(height, width, config.short_side))
    objects = np.where(annotation == VOID, 0, annotation).astype(np.uint8)  # DAVIS scores void as background
    small = np.array(Image.fromarray(objects).resize((grid_w, grid_h), Image.Resampling.NEAREST))
    first = F.one_hot(torch.from_numpy(small).long(), int(objects.max()) + 1).permute(2, 0, 1).float().to(device)
    write_labels(folder / f"{sequence.frames[0].stem}.png", annotation)
    propagated = propagate_sequence(map(features, sequence.frames), first, config)
    for path, soft in zip(sequence.frames[1:], propagated):
        write_labels(folder / f"{path.stem}.png", hard_labels(soft, patch, height, width))


@dataclass
class DavisResult:
    jf_mean: float  # (J-Mean + F-Mean) / 2, the figure papers report (x 100)
    j_mean: float  # means over all objects of all sequences, as the official evaluation_method.py
    j_recall: float
    j_decay: float
    f_mean: float
    f_recall: float
    f_decay: float
    objects: dict[str, dict[str, float]] = field(default_factory=dict)  # "<sequence>_<id>": J, F (means)
    sequences: dict[str, dict[str, float]] = field(default_factory=dict)  # J, F, J&F over its objects, objects
    seconds: float = 0.0


def score(sequences: list[Sequence], out: Path) -> DavisResult:
    """J and F of the label maps in OUT/<sequence>/, read back as the official code reads them."""
    objects: dict[str, tuple] = {}  # "<sequence>_<id>": (J statistics, F statistics)
    per_sequence = {}
    for sequence in sequences:
        results = [read_labels(out / sequence.name / f"{p.stem}.png") for p in sequence.frames]
        j, f = sequence_measures([read_labels(p) for p in sequence.annotations], results)
        mine = {f"{sequence.name}_{o + 1}": (statistics(j[o]), statistics(f[o])) for o in range(len(j))}
        j_mean, f_mean = (float(np.mean([s[i].mean for s in mine.values()])) for i in (0, 1))
        per_sequence[sequence.name] = {"J": j_mean, "F": f_mean, "J&F": (j_mean + f_mean) / 2, "objects": len(mine)}
        objects.update(mine)

    def mean(measure: int, what: str) -> float:
        return float(np.mean([getattr(s[measure], what) for s in objects.values()]))

    return DavisResult(jf_mean=(mean(0, "mean") + mean(1, "mean")) / 2, j_mean=mean(0, "mean"),
                       j_recall=mean(0, "recall"), j_decay=mean(0, "decay"), f_mean=mean(1, "mean"),
                       f_recall=mean(1, "recall"), f_decay=mean(1, "decay"),
                       objects={k: {"J": j.mean, "F": f.mean} for k, (j, f) in objects.items()},
                       sequences=per_sequence)


def claim(out: Path, run: dict, names: list[str], overwrite: bool) -> None:
    """Resume only what this run (same checkpoint, data and settings) segmented; anything else needs --overwrite."""
    previous = read_json(out / RUN_FILE)
    done = [n for n in names if (out / n).exists()]
    if previous != run and (previous is not None or done):
        if not overwrite:
            changed = sorted(k for k in run if not isinstance(previous, dict) or previous.get(k) != run[k])
            raise UsageError(f"{out} holds segmentations of another run (its {RUN_FILE} differs in "
                             f"{', '.join(changed)})", "pass another --out, or --overwrite to replace them")
        for name in done:
            shutil.rmtree(out / name)
    write_json_atomic(out / RUN_FILE, run)


def davis_checkpoint(checkpoint: str | os.PathLike, davis: str | os.PathLike, out: str | os.PathLike,
                     config: DavisConfig = DavisConfig(), subset: str = "val", arch: str | None = None,
                     which: str = "teacher", device: str | None = None, overwrite: bool = False,
                     progress: Callable[[str], None] = log.info) -> tuple[DavisResult, Path]:
    """`wtours eval davis`: check the layout, segment every sequence not yet segmented (each sequence's folder
    appears whole or not at all), score them all, write OUT/davis.json."""
    started = time.perf_counter()
    sequences = read_layout(davis, subset)
    where = torch.device(resolve_device(device))
    backbone, arch = load_backbone(checkpoint, arch, which)
    backbone = backbone.to(where)
    stat, out = Path(checkpoint).stat(), Path(out)
    run = {"checkpoint": str(Path(checkpoint).resolve()), "checkpoint_bytes": stat.st_size,
           "checkpoint_mtime_ns": stat.st_mtime_ns, "arch": arch, "which": which,
           "davis": str(Path(davis).resolve()), "set": subset, **asdict(config)}
    with folder_lock(out, "DAVIS results folder"):
        for stale in out.glob(TEMPORARY_GLOB):  # of a run killed mid-sequence: no live run writes under the lock
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        claim(out, run, [s.name for s in sequences], overwrite)
        for number, sequence in enumerate(sequences, 1):
            folder = out / sequence.name
            if folder.is_dir():
                progress(f"[{number}/{len(sequences)}] {sequence.name}: segmented already")
                continue
            tmp = out / f".{sequence.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
            tmp.mkdir()
            try:
                segment_sequence(backbone, sequence, config, where, tmp)
                os.replace(tmp, folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            progress(f"[{number}/{len(sequences)}] {sequence.name}: {len(sequence.frames)} frames segmented")
        result = score(sequences, out)
        result.seconds = time.perf_counter() - started
        write_json_atomic(out / RESULT_FILE, {**run, "results": str(out), **asdict(result)})
    return result, out / RESULT_FILE


def davis_backbone(backbone: VisionTransformer, sequences: list[Sequence], config: DavisConfig,
                   device: torch.device) -> DavisResult:
    """The trainer's DAVIS figures of an in-memory backbone: `sequences` segmented in a temporary folder, scored."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wtours-davis-") as tmp:
        for sequence in sequences:
            (Path(tmp) / sequence.name).mkdir()
            segment_sequence(backbone, sequence, config, device, Path(tmp) / sequence.name)
        result = score(sequences, Path(tmp))
    result.seconds = time.perf_counter() - started
    return result


def result_table(result: DavisResult) -> str:
    """Per sequence J, F and J&F (means over its objects), then the official global figures."""
    width = max([len("sequence"), *map(len, result.sequences)])
    lines = [f"{'sequence':<{width}}  objects  J-Mean  F-Mean  J&F-Mean"]
    lines += [f"{name:<{width}}  {s['objects']:>7}  {s['J']:6.3f}  {s['F']:6.3f}  {s['J&F']:8.3f}"
              for name, s in result.sequences.items()]
    lines.append(f"DAVIS J&F-Mean {result.jf_mean:.3f}: J-Mean {result.j_mean:.3f} (recall {result.j_recall:.3f}, "
                 f"decay {result.j_decay:.3f}), F-Mean {result.f_mean:.3f} (recall {result.f_recall:.3f}, decay "
                 f"{result.f_decay:.3f}) over {len(result.objects)} objects ({result.seconds:.1f} s)")
    return "\n".join(lines)
