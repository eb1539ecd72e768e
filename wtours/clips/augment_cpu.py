"""DoRA's multi-crop on the CPU, for DataLoader workers: the authors' operations with faster kernels.

DINO's and DoRA's PIL pipelines decode with libjpeg, resample with PIL's antialiased filters and
colour-jitter with ImageEnhance and PIL's HSV conversion. The same operations here, per clip:
libjpeg-turbo decoding (torchvision), PyTorch's vectorised uint8 antialiased resizes (ported from
PIL's filters), OpenCV's lookup tables, blends, float HSV conversions and Gaussian blur. The random
parameters come from `augment.plan_crops` / `augment.plan_colours`, so this path and the batched
tensor path (`augment.multicrop_tensor`) draw from the same distributions. docs/benchmarks.md has
the speed of both against PIL's."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torch.utils.data import get_worker_info
from torchvision.io import ImageReadMode, decode_jpeg

from wtours.clips.augment import ColourPlan, MultiCropConfig, plan_colours, plan_crops, resized_crop


def decode_clip(jpgs: list[bytes]) -> list[torch.Tensor]:
    """T JPEGs -> T x (3, H, W) uint8 (libjpeg-turbo). Raises RuntimeError for a frame that does not decode.

    Each frame is a channels-last view of the decoder's (H, W, 3) rows: crops of it are row copies,
    where stacking the frames would transpose them whole."""
    return decode_jpeg([torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpgs], mode=ImageReadMode.RGB)


def multicrop_cpu(clips: list[list[torch.Tensor]], rng: np.random.Generator,
                  config: MultiCropConfig) -> list[torch.Tensor]:
    """B clips of T decoded frames (`decode_clip`) -> [global (B, T, 3, G, G), local_1 .. local_n (B, T, 3, L, L)],
    uint8, contiguous: a quarter of float32's bytes to send between processes. The consumer normalises
    them after moving them to its device (`augment.normalise_uint8`, `ClipBatch.normalised`).

    Per clip, as the authors' PIL pipeline orders it, with faster kernels for the same operations:
    PyTorch's vectorised uint8 antialiased resizes (PIL's filters) and OpenCV's colour kernels
    (`colour_cpu`). Randomness is drawn per clip in `multicrop_tensor`'s order for B = 1. One thread
    per worker: DataLoader workers are the parallelism."""
    cv2.setNumThreads(1)
    b, t, n = len(clips), len(clips[0]), config.n_local
    g, size = config.global_size, config.local_size
    globals_ = _output((b, t, 3, g, g))  # (B, T, 3, G, G): the model's planar layout
    locals_ = _output((n, b, t, 3, size, size))  # view-major: each local view is one contiguous block
    planar_g, planar_l = globals_.numpy(), locals_.numpy()
    mirror = np.empty((t, g, g, 3), np.uint8)  # (T, G, G, 3): a flipped clip's global views, reused
    for i, frames in enumerate(clips):
        plan = plan_crops(rng, np.array([frames[0].shape[1:]]), t, config)
        x0, y0, x1, y1 = (int(v) for v in plan.clip_boxes[0])
        window = torch.empty((t, y1 - y0, x1 - x0, 3), dtype=torch.uint8)  # (T, h, w, 3)
        for j, frame in enumerate(frames):  # the frames' rows inside the clip window, copied once
            window[j] = frame.permute(1, 2, 0)[y0:y1, x0:x1]
        # one resize call for the T frames: the window is already the channels-last block it takes
        clip = resized_crop(window.permute(0, 3, 1, 2), np.array([0, 0, x1 - x0, y1 - y0]), config.clip_size,
                            "bilinear")  # (T, 3, 300, 300), channels-last
        # the resizes' channels-last outputs are coloured in place as (H, W, 3) arrays, then split into the
        # planar outputs (ascontiguousarray copies nothing when, as here, they are contiguous already)
        view = np.ascontiguousarray(resized_crop(clip, plan.global_boxes[0], g, "bicubic")
                                    .permute(0, 2, 3, 1).numpy())  # (T, G, G, 3), one window
        if plan.flips[0]:
            for j in range(t):  # OpenCV's flip: about 30x numpy's copy of a reversed view
                cv2.flip(view[j], 1, dst=mirror[j])
            view = mirror
        colour_cpu(view, plan_colours(rng, t, config.global_blur_p, config))
        crops = [np.ascontiguousarray(resized_crop(clip[j:j + 1], plan.local_boxes[0, v, j], size, "bicubic")[0]
                                      .permute(1, 2, 0).numpy())
                 for v in range(n) for j in range(t)]  # n*T x (L, L, 3), a window per view and per frame
        colour_cpu(crops, plan_colours(rng, n * t, config.local_blur_p, config))
        for j in range(t):
            _split(view[j], planar_g[i, j])
            for v in range(n):
                _split(crops[v * t + j], planar_l[v, i, j])
    return [globals_] + list(locals_.unbind(0))


def _output(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor. In a DataLoader worker it is allocated in shared memory, as
    torch's default_collate allocates its batches: a tensor in private memory is copied into shared
    memory when the worker sends it, one this size is not."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    elem = torch.empty(0, dtype=torch.uint8)
    storage = elem._typed_storage()._new_shared(math.prod(shape), device=elem.device)
    return elem.new(storage).resize_(shape)


def _split(image: np.ndarray, planes: np.ndarray) -> None:
    """(H, W, 3) -> (3, H, W) uint8: OpenCV's vectorised channel split, about 10x numpy's strided transpose."""
    cv2.split(image, [planes[0], planes[1], planes[2]])


def colour_cpu(images, plan: ColourPlan) -> None:
    """Jitter (random op order per image) -> grayscale -> blur, in place, with OpenCV's uint8 kernels.

    images: M arrays (H, W, 3) uint8 RGB, each contiguous (an (M, H, W, 3) array will do). The
    operations are torchvision's ColorJitter, RandomGrayscale and DINO's GaussianBlur; results are
    rounded to uint8 after each op, as the PIL pipeline does (it truncates; this rounds, and rotates
    the hue in float where PIL quantises it to a byte)."""
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
            size = 2 * math.ceil(3 * sigma) + 1  # cut at 3 sigma, as the tensor path's kernels
            cv2.GaussianBlur(image, (size, size), sigma, dst=image, borderType=cv2.BORDER_REFLECT_101)


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


_LEVELS = np.arange(256, dtype=np.float32)


def _linear_lut(image: np.ndarray, scale: float, offset: float) -> None:
    """image <- clip(round(scale * image + offset)) per channel, as one 256-entry table."""
    cv2.LUT(image, np.clip(np.rint(_LEVELS * scale + offset), 0, 255).astype(np.uint8), dst=image)


def _cpu_brightness(image: np.ndarray, factor: float, scratch: _Scratch | None = None) -> None:
    _linear_lut(image, factor, 0.0)


def _cpu_contrast(image: np.ndarray, factor: float, scratch: _Scratch | None = None) -> None:
    """Blend with the image's mean grey (torchvision: the mean of its grayscale image)."""
    gray = (scratch or _Scratch()).get("gray", image.shape[:2], np.uint8)
    mean = float(cv2.mean(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY, dst=gray))[0])
    _linear_lut(image, factor, (1 - factor) * mean)


def _cpu_saturation(image: np.ndarray, factor: float, scratch: _Scratch | None = None) -> None:
    """Blend with the grayscale image."""
    scratch = scratch or _Scratch()
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY, dst=scratch.get("gray", image.shape[:2], np.uint8))
    grey_rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB, dst=scratch.get("grey_rgb", image.shape, np.uint8))
    cv2.addWeighted(image, factor, grey_rgb, 1 - factor, 0.0, dst=image)


def _cpu_hue(image: np.ndarray, shift: float, scratch: _Scratch | None = None) -> None:
    """Rotate the hue by `shift` turns, on float HSV: exact up to the final rounding, and faster than
    OpenCV's uint8 HSV conversions."""
    scratch = scratch or _Scratch()
    rgb, hsv = scratch.get("rgb", image.shape, np.float32), scratch.get("hsv", image.shape, np.float32)
    np.copyto(rgb, image)  # uint8 -> float32, exact
    cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV, dst=hsv)  # hue in [0, 360) degrees
    # HSV2RGB wraps hues up to 720 but its vectorised loop mishandles negative ones: shift forwards
    cv2.add(hsv, ((360.0 * shift) % 360.0, 0.0, 0.0, 0.0), dst=hsv)  # type: ignore[call-overload]  # stubs: no scalars
    cv2.convertScaleAbs(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB, dst=rgb), dst=image)  # round, saturate (values >= 0)


_CPU_OPS = (_cpu_brightness, _cpu_contrast, _cpu_saturation, _cpu_hue)  # the order of ColourPlan.factors

