"""DoRA's multi-crop on the CPU, for DataLoader workers: the authors' operations with faster kernels.

Where DINO's and DoRA's PIL pipelines decode with libjpeg, resample with PIL's antialiased filters and
colour-jitter with ImageEnhance and PIL's HSV conversion, this runs, per clip: libjpeg-turbo decoding of
only the window the crops use (`jpeg`; the same pixels as the whole frame's), PyTorch's vectorised uint8
antialiased resizes (ported from PIL's filters), OpenCV's vectorised scalings, blends, float HSV
conversions and separable Gaussian blur, each rounded once to uint8 (within half a level of
torchvision's float formulas). Parameters come from `augment`'s sampler, as for the tensor path.
docs/benchmarks.md has the speed of both against PIL's."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import get_worker_info

from wtours.clips.augment import ColourPlan, CropPlan, MultiCropConfig, plan_colours, plan_crops, resized_crop
from wtours.clips.jpeg import WindowDecoder, decode_clip, not_decodable, window_decoder
from wtours.clips.recycle import shared_empty

__all__ = ["DecodedViews", "colour_cpu", "decode_clip", "multicrop_cpu", "multicrop_jpegs", "output_shapes"]


def multicrop_cpu(clips: list[list[torch.Tensor]], rng: np.random.Generator,
                  config: MultiCropConfig) -> list[torch.Tensor]:
    """B clips of T decoded frames (`decode_clip`) -> [global (B, T, 3, G, G), local_1 .. local_n (B, T, 3, L, L)],
    uint8, contiguous: a quarter of float32's bytes to send between processes (the consumer normalises
    them on its device: `ClipBatch.normalised`). Per clip, in the authors' order; randomness is drawn
    per clip in `multicrop_tensor`'s order for B = 1. One thread: DataLoader workers are the parallelism."""
    cv2.setNumThreads(1)
    views = _Views(len(clips), len(clips[0]), config)
    for i, frames in enumerate(clips):
        views.crop(i, frames, rng)
    return views.tensors()


@dataclass
class DecodedViews:
    """`multicrop_jpegs`' result for B clips."""

    views: list[torch.Tensor]  # as `multicrop_cpu`'s, B rows; [] when no clip decodes
    sources: list[int]  # the clip of each row: those that decode, in order, then repeats of the first of them
    failures: list[tuple[int, RuntimeError]]  # (clip, its decoding error) for each clip that does not decode


def multicrop_jpegs(clips: list[list[bytes]], rng: np.random.Generator, config: MultiCropConfig,
                    outputs: list[torch.Tensor] | None = None) -> DecodedViews:
    """B clips of T JPEGs -> `multicrop_cpu`'s views, each clip decoded just before its crops (only the clip
    window where TurboJPEG 3 is at hand: `jpeg.window_decoder`), into `outputs` where given (shapes from
    `output_shapes`: a worker's reused shared memory, `recycle.OutputPool`).

    A clip's frames (11 MB at 910x512) are still in the cache when their windows are copied, where
    decoding the whole batch first (90 MB) faults fresh pages in: 1.085x its speed in one process on a
    loaded machine, about even on a quiet one (docs/benchmarks.md). A clip that does not decode is
    reported in `failures` and its row goes to a clip that does (re-decoded, with new crops), so the
    batch keeps its size: the views, rows and draws are `multicrop_cpu`'s on the decodable clips'
    frames followed by repeats of the first of them."""
    cv2.setNumThreads(1)
    views = _Views(len(clips), len(clips[0]), config, outputs)
    decoder = window_decoder()
    sources: list[int] = []
    failures: list[tuple[int, RuntimeError]] = []
    for i, jpgs in enumerate(clips):
        try:
            views.crop_jpegs(len(sources), jpgs, rng, decoder)
            sources.append(i)
        except RuntimeError as error:
            failures.append((i, error))
    if not sources:
        return DecodedViews([], [], failures)
    decodable = len(sources)
    for row in range(decodable, len(clips)):
        source = sources[row - decodable]  # the first decodable clips again (and again, past them)
        views.crop_jpegs(row, clips[source], rng, decoder)
        sources.append(source)
    return DecodedViews(views.tensors(), sources, failures)


def output_shapes(b: int, t: int, config: MultiCropConfig) -> list[tuple[int, ...]]:
    """The shapes of the two blocks a batch's views live in: the global views (B, T, 3, G, G), in the
    model's planar layout, and the local views (n, B, T, 3, L, L), view-major, so that each local
    view is one contiguous block."""
    n, g, size = config.n_local, config.global_size, config.local_size
    return [(b, t, 3, g, g), (n, b, t, 3, size, size)]


class _Views:
    """The output views of B clips of T frames, filled a clip at a time."""

    def __init__(self, b: int, t: int, config: MultiCropConfig, outputs: list[torch.Tensor] | None = None) -> None:
        self.config, self.t = config, t
        shapes = output_shapes(b, t, config)
        if outputs is None:
            outputs = [_output(shape) for shape in shapes]
        elif [tuple(o.shape) for o in outputs] != shapes or any(o.dtype != torch.uint8 for o in outputs):
            raise ValueError(f"outputs must be uint8 tensors of shapes {shapes}")
        self.globals_, self.locals_ = outputs
        self.planar_g, self.planar_l = self.globals_.numpy(), self.locals_.numpy()
        self.mirror = np.empty((t, config.global_size, config.global_size, 3), np.uint8)  # flipped global views

    def tensors(self) -> list[torch.Tensor]:
        return [self.globals_] + list(self.locals_.unbind(0))

    def crop(self, i: int, frames: list[torch.Tensor], rng: np.random.Generator) -> None:
        """Row i <- one clip's T decoded frames (3, H, W), cropped and coloured."""
        plan = plan_crops(rng, np.array([frames[0].shape[1:]]), self.t, self.config)
        x0, y0, x1, y1 = (int(v) for v in plan.clip_boxes[0])
        window = np.empty((self.t, y1 - y0, x1 - x0, 3), np.uint8)  # (T, h, w, 3)
        for j, frame in enumerate(frames):  # the frames' rows inside the clip window, copied once
            np.copyto(window[j], frame.permute(1, 2, 0).numpy()[y0:y1, x0:x1])
        self._views(i, window, plan, rng)

    def crop_jpegs(self, i: int, jpgs: list[bytes], rng: np.random.Generator, decoder: WindowDecoder | None) -> None:
        """Row i <- one clip's T JPEGs, decoding only the clip window where TurboJPEG 3 is at hand. Raises
        RuntimeError for a frame that does not decode, leaving `rng` as it found it (the draws are then
        those of `crop` on the clips that decode)."""
        if decoder is None:
            self.crop(i, decode_clip(jpgs), rng)
            return
        size = decoder.size(jpgs[0])
        if size is None:
            raise not_decodable(0, len(jpgs), jpgs[0])
        state = rng.bit_generator.state
        plan = plan_crops(rng, np.array([size]), self.t, self.config)
        x0, y0, x1, y1 = (int(v) for v in plan.clip_boxes[0])
        window = np.empty((self.t, y1 - y0, x1 - x0, 3), np.uint8)  # (T, h, w, 3)
        for j, jpg in enumerate(jpgs):
            if not decoder.decode_window(jpg, (x0, y0, x1, y1), window[j]):
                rng.bit_generator.state = state
                raise not_decodable(j, len(jpgs), jpg)
        self._views(i, window, plan, rng)

    def _views(self, i: int, window: np.ndarray, plan: CropPlan, rng: np.random.Generator) -> None:
        """Row i <- the views of one clip's window (T, h, w, 3) under its crop plan, coloured."""
        config, t, n = self.config, self.t, self.config.n_local
        g, size = config.global_size, config.local_size
        x0, y0, x1, y1 = (int(v) for v in plan.clip_boxes[0])
        # one resize call for the T frames: the window is already the channels-last block it takes
        clip = resized_crop(torch.from_numpy(window).permute(0, 3, 1, 2), np.array([0, 0, x1 - x0, y1 - y0]),
                            config.clip_size, "bilinear")  # (T, 3, 300, 300), channels-last
        # the resizes' channels-last outputs are coloured in place as (H, W, 3) arrays, then split into the
        # planar outputs (ascontiguousarray copies nothing when, as here, they are contiguous already)
        view = np.ascontiguousarray(resized_crop(clip, plan.global_boxes[0], g, "bicubic")
                                    .permute(0, 2, 3, 1).numpy())  # (T, G, G, 3), one window
        if plan.flips[0]:
            for j in range(t):  # OpenCV's flip: about 30x numpy's copy of a reversed view
                cv2.flip(view[j], 1, dst=self.mirror[j])
            view = self.mirror
        colour_cpu(view, plan_colours(rng, t, config.global_blur_p, config))
        crops = [np.ascontiguousarray(resized_crop(clip[j:j + 1], plan.local_boxes[0, v, j], size, "bicubic")[0]
                                      .permute(1, 2, 0).numpy())
                 for v in range(n) for j in range(t)]  # n*T x (L, L, 3), a window per view and per frame
        colour_cpu(crops, plan_colours(rng, n * t, config.local_blur_p, config))
        for j in range(t):  # (H, W, 3) -> (3, H, W): OpenCV's channel split, about 10x numpy's strided transpose
            cv2.split(view[j], list(self.planar_g[i, j]))
            for v in range(n):
                cv2.split(crops[v * t + j], list(self.planar_l[v, i, j]))


def _output(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor; in a DataLoader worker, in shared memory (`recycle.shared_empty`)."""
    return torch.empty(shape, dtype=torch.uint8) if get_worker_info() is None else shared_empty(shape)


def colour_cpu(images, plan: ColourPlan) -> None:
    """Jitter (random op order per image) -> grayscale -> blur, in place, with OpenCV's uint8 kernels.

    images: M arrays (H, W, 3) uint8 RGB, each contiguous (an (M, H, W, 3) array will do). The
    operations are torchvision's ColorJitter, RandomGrayscale and DINO's GaussianBlur; results are
    rounded to uint8 after each op, as the PIL pipeline does (it truncates; this rounds, rotates the
    hue in float where PIL quantises it to a byte, and blurs with a true Gaussian where PIL
    approximates it with box blurs)."""
    # Python lists: indexing numpy arrays per image costs more than the small images' kernels
    jitter, order, factors = plan.jitter.tolist(), plan.order.tolist(), plan.factors.tolist()
    gray, sigmas = plan.gray.tolist(), plan.blur_sigma.tolist()
    scratch = _Scratch()
    for i, image in enumerate(images):
        if jitter[i]:
            for op in order[i]:
                _CPU_OPS[op](image, factors[i][op], scratch)
        if gray[i]:
            cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY, dst=scratch.get("gray", image.shape[:2], np.uint8)),
                         cv2.COLOR_GRAY2RGB, dst=image)
        sigma = sigmas[i]
        if not math.isnan(sigma):
            # the tensor path's kernel (cut at 3 sigma), applied as two float 1-D passes: 2-2.7x
            # GaussianBlur's speed, and rounded once (GaussianBlur's fixed-point weights were up to 1.4 off)
            kernel = cv2.getGaussianKernel(2 * math.ceil(3 * sigma) + 1, sigma)
            cv2.sepFilter2D(image, -1, kernel, kernel, dst=image, borderType=cv2.BORDER_REFLECT_101)


class _Scratch:
    """Work arrays reused by the ops on one call's images. Fresh ones above glibc's mmap threshold
    (128 KB; a 224x224 float image is 600 KB) may come as new pages, faulted in on every op: a global
    view's hue rotation took 0.73 ms that way against 0.17 ms with reused arrays (the multi-crop went
    from about 1,000 page faults per clip to about 20)."""

    def __init__(self) -> None:
        self.arrays: dict[tuple, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        key = (name, shape)
        if key not in self.arrays:
            self.arrays[key] = np.empty(shape, dtype)
        return self.arrays[key]


# torchvision's grayscale weights (`augment._gray`)
_GREY_WEIGHTS = (0.2989, 0.587, 0.114)


def _cpu_brightness(image: np.ndarray, factor: float, scratch: _Scratch | None = None) -> None:
    """image <- clip(round(factor * image)): OpenCV's vectorised float scaling (factor > 0, so its
    |alpha * x| is alpha * x); about 2.5x a lookup table's pass."""
    cv2.convertScaleAbs(image, dst=image, alpha=factor)


def _cpu_contrast(image: np.ndarray, factor: float, scratch: _Scratch | None = None) -> None:
    """Blend with the image's mean grey. torchvision's is the mean of the float grayscale image, i.e.
    the grey weights applied to the channel means: one read pass, no grayscale image."""
    r, g, b, _ = cv2.mean(image)
    mean = _GREY_WEIGHTS[0] * r + _GREY_WEIGHTS[1] * g + _GREY_WEIGHTS[2] * b
    # factor * image + (1 - factor) * mean, rounded and saturated (negative values clip to 0, in float)
    cv2.addWeighted(image, factor, image, 0.0, (1 - factor) * mean, dst=image)


def _cpu_saturation(image: np.ndarray, factor: float, scratch: _Scratch | None = None) -> None:
    """Blend with the grayscale image. (OpenCV's 3x3 `transform` would do it in one pass, but its uint8
    path quantises the weights to 1/1024: up to 0.7 levels off the float formula.)"""
    scratch = scratch or _Scratch()
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY, dst=scratch.get("gray", image.shape[:2], np.uint8))
    grey_rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB, dst=scratch.get("grey_rgb", image.shape, np.uint8))
    cv2.addWeighted(image, factor, grey_rgb, 1 - factor, 0.0, dst=image)


# cv2.add takes a Scalar tuple, which some releases of OpenCV's own stubs reject and others accept: typed
# loosely here so that mypy's verdict does not depend on which opencv-python-headless resolves.
_add_scalar: Callable[..., Any] = cv2.add


def _cpu_hue(image: np.ndarray, shift: float, scratch: _Scratch | None = None) -> None:
    """Rotate the hue by `shift` turns, on float HSV: exact up to the final rounding, and faster than
    OpenCV's uint8 HSV conversions."""
    scratch = scratch or _Scratch()
    rgb, hsv = scratch.get("rgb", image.shape, np.float32), scratch.get("hsv", image.shape, np.float32)
    np.copyto(rgb, image)  # uint8 -> float32, exact
    cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV, dst=hsv)  # hue in [0, 360) degrees
    # HSV2RGB wraps hues up to 720 but its vectorised loop mishandles negative ones: shift forwards
    _add_scalar(hsv, ((360.0 * shift) % 360.0, 0.0, 0.0, 0.0), dst=hsv)
    cv2.convertScaleAbs(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB, dst=rgb), dst=image)  # round, saturate (values >= 0)


_CPU_OPS = (_cpu_brightness, _cpu_contrast, _cpu_saturation, _cpu_hue)  # the order of ColourPlan.factors

