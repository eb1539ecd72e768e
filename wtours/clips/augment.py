"""DoRA's multi-crop augmentation (docs/dora-method.md): one parameter sampler, two pixel paths.

Random parameters are drawn on the host with numpy (`plan_crops`, `plan_colours`), in the same order
by both paths, so both draw from the same distributions. The pixel work then runs either
- per clip on the CPU (`augment_cpu.multicrop_cpu`, in DataLoader workers): the operations of DINO's
  and DoRA's PIL pipelines, run with faster uint8 kernels; or
- per batch as tensor ops on any device (`multicrop_tensor`, after decoding the JPEGs on the GPU):
  antialiased resizes, torchvision's colour formulas batched with per-image factors, a separable
  Gaussian blur."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from wtours.models.registry import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class MultiCropConfig:
    clip_size: int = 300  # the shared clip crop every view is cut from
    clip_scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    global_size: int = 224
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_size: int = 112
    local_scale: tuple[float, float] = (0.05, 0.4)
    n_local: int = 6
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    gray_p: float = 0.2
    global_blur_p: float = 0.1
    local_blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)


# ----------------------------------------------------------------------------- geometry


def sample_boxes(rng: np.random.Generator, heights: np.ndarray, widths: np.ndarray,
                 scale: tuple[float, float], ratio: tuple[float, float], attempts: int = 10) -> np.ndarray:
    """torchvision's RandomResizedCrop.get_params, vectorised: (n,) sizes -> (n, 4) boxes (x0, y0, x1, y1)."""
    heights, widths = np.asarray(heights, np.float64), np.asarray(widths, np.float64)
    n = len(heights)
    area = heights * widths
    target = area * rng.uniform(scale[0], scale[1], (attempts, n))
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]), (attempts, n)))
    w = np.round(np.sqrt(target * aspect))
    h = np.round(np.sqrt(target / aspect))
    ok = (w > 0) & (h > 0) & (w <= widths) & (h <= heights)
    first = np.argmax(ok, axis=0)  # first valid attempt per box
    found = ok[first, np.arange(n)]
    w, h = w[first, np.arange(n)], h[first, np.arange(n)]
    # fallback (no valid attempt): the largest central crop with a ratio inside the range
    in_ratio = widths / heights
    w = np.where(found, w, np.where(in_ratio > ratio[1], np.round(heights * ratio[1]), widths))
    h = np.where(found, h, np.where(in_ratio < ratio[0], np.round(widths / ratio[0]), heights))
    top = np.where(found, np.floor(rng.uniform(0, 1, n) * (heights - h + 1)), (heights - h) // 2)
    left = np.where(found, np.floor(rng.uniform(0, 1, n) * (widths - w + 1)), (widths - w) // 2)
    return np.stack([left, top, left + w, top + h], axis=1)


@dataclass(frozen=True)
class CropPlan:
    """All geometry for B clips of T frames as integer (x0, y0, x1, y1) boxes."""

    clip_boxes: np.ndarray  # (B, 4) in frame pixels: the shared window resized to clip_size
    global_boxes: np.ndarray  # (B, 4) in clip pixels: one window for all T frames of a clip
    flips: np.ndarray  # (B,) bool: one flip for all T frames
    local_boxes: np.ndarray  # (B, n, T, 4) in clip pixels: per view and per frame


def plan_crops(rng: np.random.Generator, sizes: np.ndarray, frames: int, config: MultiCropConfig) -> CropPlan:
    """sizes: (B, 2) frame (height, width) per clip."""
    b, n, s = len(sizes), config.n_local, config.clip_size
    full = np.full(b, float(s))
    many = np.full(b * n * frames, float(s))
    return CropPlan(
        clip_boxes=sample_boxes(rng, sizes[:, 0], sizes[:, 1], config.clip_scale, config.ratio).astype(np.int64),
        global_boxes=sample_boxes(rng, full, full, config.global_scale, config.ratio).astype(np.int64),
        flips=rng.uniform(size=b) < config.flip_p,
        local_boxes=sample_boxes(rng, many, many, config.local_scale, config.ratio).astype(np.int64)
        .reshape(b, n, frames, 4),
    )


def resized_crop(images: torch.Tensor, box: np.ndarray, size: int, mode: str) -> torch.Tensor:
    """images (N, 3, H, W) -> the same box of each, resized to (N, 3, size, size) with antialiasing.

    uint8 input takes PyTorch's vectorised uint8 resize path on the CPU."""
    x0, y0, x1, y1 = (int(v) for v in box)
    crop = images[:, :, y0:y1, x0:x1]
    if crop.dtype == torch.uint8:
        crop = crop.contiguous(memory_format=torch.channels_last)
    return F.interpolate(crop, size=(size, size), mode=mode, antialias=True, align_corners=False)


# ----------------------------------------------------------------------------- colour


@dataclass(frozen=True)
class ColourPlan:
    """Per-image colour randomness for M images."""

    jitter: np.ndarray  # (M,) bool: colour jitter applied (p = jitter_p)
    factors: np.ndarray  # (M, 4) brightness, contrast, saturation factors and hue shift
    order: np.ndarray  # (M, 4) permutation of the four jitter ops (torchvision randomises it)
    gray: np.ndarray  # (M,) bool
    blur_sigma: np.ndarray  # (M,) sigma, NaN where no blur


def plan_colours(rng: np.random.Generator, m: int, blur_p: float, config: MultiCropConfig) -> ColourPlan:
    b, c, s, h = config.brightness, config.contrast, config.saturation, config.hue
    factors = np.stack([rng.uniform(1 - b, 1 + b, m), rng.uniform(1 - c, 1 + c, m),
                        rng.uniform(1 - s, 1 + s, m), rng.uniform(-h, h, m)], axis=1)
    sigma = rng.uniform(config.blur_sigma[0], config.blur_sigma[1], m)
    return ColourPlan(
        jitter=rng.uniform(size=m) < config.jitter_p,
        factors=factors,
        order=np.argsort(rng.uniform(size=(m, 4)), axis=1),
        gray=rng.uniform(size=m) < config.gray_p,
        blur_sigma=np.where(rng.uniform(size=m) < blur_p, sigma, np.nan),
    )


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(M, 3, H, W) -> (M, 1, H, W), torchvision's weights."""
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _blend(a: torch.Tensor, b: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    return (ratio * a + (1 - ratio) * b).clamp_(0, 1)


def _shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """RGB -> HSV, rotate hue by `shift` (fraction of a turn), -> RGB; matches torchvision's adjust_hue.

    HSV -> RGB uses the closed form  c_k = v - v*s*clamp(min(n_k, 4 - n_k), 0, 1),
    n_k = (k + 6h) mod 6 with k = 5, 3, 1 for R, G, B."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    value, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = value - minc
    saturation = delta / value.clamp(min=1e-12)
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    hue = torch.where(value == r, (g - b) / safe, torch.where(value == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = torch.where(delta == 0, torch.zeros_like(hue), hue)
    h6 = torch.remainder(hue + 6.0 * shift[:, None, None], 6.0)  # hue in sextants, shifted
    chroma = value * saturation
    out = []
    for k in (5.0, 3.0, 1.0):
        n = torch.remainder(h6 + k, 6.0)
        out.append(value - chroma * torch.minimum(n, 4.0 - n).clamp_(0, 1))
    return torch.stack(out, dim=1)


def _jitter_op(x: torch.Tensor, op: int, factor: torch.Tensor) -> torch.Tensor:
    f = factor[:, None, None, None]
    if op == 0:  # brightness
        return (x * f).clamp_(0, 1)
    if op == 1:  # contrast: blend with the image's mean grey
        return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), f)
    if op == 2:  # saturation: blend with the grey image
        return _blend(x, _gray(x), f)
    return _shift_hue(x, factor)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma (M,), each kernel cut at 3 sigma: (M, 3, H, W)."""
    m, c, h, w = x.shape
    radius = min(int(np.ceil(3 * float(sigma.max()))), (min(h, w) - 1) // 2)
    offsets = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    kernel = torch.exp(-0.5 * (offsets[None] / sigma[:, None]) ** 2)
    kernel = kernel * (offsets.abs()[None] <= torch.ceil(3 * sigma)[:, None])
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (M*3, K), normalised
    flat = x.reshape(1, m * c, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=m * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=m * c)
    return flat.reshape(m, c, h, w)


def colour_augment(x: torch.Tensor, plan: ColourPlan) -> torch.Tensor:
    """Jitter (random op order per image) -> grayscale -> blur, in place of DINO's PIL pipeline.

    x: (M, 3, S, S) float in [0, 1]."""
    device = x.device
    factors = torch.as_tensor(plan.factors, dtype=x.dtype, device=device)
    jitter = torch.as_tensor(plan.jitter, device=device)
    order = torch.as_tensor(plan.order, device=device)
    for position in range(4):
        for op in range(4):
            idx = torch.nonzero(jitter & (order[:, position] == op)).flatten()
            if len(idx):
                x[idx] = _jitter_op(x[idx], op, factors[idx, op])
    gray = torch.nonzero(torch.as_tensor(plan.gray, device=device)).flatten()
    if len(gray):
        x[gray] = _gray(x[gray]).expand(-1, 3, -1, -1)
    blurred = np.flatnonzero(~np.isnan(plan.blur_sigma))
    if len(blurred):
        idx = torch.as_tensor(blurred, device=device)
        x[idx] = _blur(x[idx], torch.as_tensor(plan.blur_sigma[blurred], dtype=x.dtype, device=device))
    return x


def normalize(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float in [0, 1] -> ImageNet-normalised."""
    mean, std = (torch.tensor(c, dtype=x.dtype, device=x.device)[:, None, None] for c in (IMAGENET_MEAN, IMAGENET_STD))
    return (x - mean) / std


# uint8 level v -> v / (255 std) - mean / std, as two float32 operations: the same values the CPU
# path sent as float32 before it sent uint8 (the constants are float32-rounded once, here)
_PIXEL_SCALE = torch.tensor([1 / (255.0 * s) for s in IMAGENET_STD])[:, None, None]  # (3, 1, 1)
_PIXEL_SHIFT = torch.tensor([m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])[:, None, None]


def normalise_uint8(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) uint8 views (the CPU path's output) -> float32, ImageNet-normalised, on x's device.

    Run it after `.to(device)`: uint8 crosses processes and the PCIe bus at a quarter of float32's
    bytes, and on a GPU this is one elementwise pass."""
    if x.dtype != torch.uint8:
        raise TypeError(f"normalise_uint8 takes uint8 views, not {x.dtype} (the GPU path's views are normalised "
                        "already)")
    return x.float().mul_(_PIXEL_SCALE.to(x.device)).sub_(_PIXEL_SHIFT.to(x.device))


# ----------------------------------------------------------------------------- views


def multicrop_tensor(frames: torch.Tensor, sizes: np.ndarray, frames_per_clip: int, rng: np.random.Generator,
                     config: MultiCropConfig) -> list[torch.Tensor]:
    """Decoded frames -> DoRA's views, as the method doc orders it: clip crop -> global / local crops.

    frames: (B*T, 3, H, W) uint8 (CPU) or float in [0, 255] (any device), clip-major; a frame smaller
    than (H, W) sits top-left (padding), with its true (height, width) in sizes (B, 2).
    Returns [global (B, T, 3, G, G), local_1 .. local_n (B, T, 3, L, L)], float32, normalised."""
    b, t, n = len(sizes), frames_per_clip, config.n_local
    plan = plan_crops(rng, sizes, t, config)
    globals_: list[torch.Tensor] = []
    locals_: list[torch.Tensor] = []
    for i in range(b):
        clip = resized_crop(frames[i * t:(i + 1) * t], plan.clip_boxes[i], config.clip_size,
                            "bilinear")  # (T, 3, 300, 300)
        view = resized_crop(clip, plan.global_boxes[i], config.global_size, "bicubic")  # (T, 3, G, G)
        globals_.append(view.flip(-1) if plan.flips[i] else view)
        locals_.extend(resized_crop(clip[j:j + 1], plan.local_boxes[i, v, j], config.local_size, "bicubic")
                       for v in range(n) for j in range(t))  # ordered clip, view, frame
    views = []  # (B*T, 3, G, G), then (B*n*T, 3, L, L)
    for crops, blur_p in ((globals_, config.global_blur_p), (locals_, config.local_blur_p)):
        unit = (torch.cat(crops).float() / 255.0).clamp_(0, 1)  # float32 in [0, 1] (bicubic overshoot clamped)
        views.append(normalize(colour_augment(unit, plan_colours(rng, len(unit), blur_p, config))))
    g, size = config.global_size, config.local_size
    return [views[0].reshape(b, t, 3, g, g), *views[1].reshape(b, n, t, 3, size, size).unbind(1)]
