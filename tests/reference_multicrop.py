"""The authors' CPU multi-crop, as DINO's and DoRA's PIL pipelines run it: a reference for tests and benchmarks.

PIL decoding, PIL's antialiased resizes, torchvision's PIL colour ops (ImageEnhance, the HSV hue
byte), PIL's GaussianBlur. The random parameters come from the library's sampler, so
`wtours.clips.augment_cpu.multicrop_cpu` run with the same generator state makes the same views with
its faster kernels; tests compare the two, and benchmarks/loader_bench.py times both."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

from wtours.clips.augment import IMAGENET_MEAN, IMAGENET_STD, ColourPlan, MultiCropConfig, plan_colours, plan_crops


def multicrop_pil(images: list[Image.Image], rng: np.random.Generator,
                  config: MultiCropConfig) -> list[torch.Tensor]:
    """One clip's T PIL frames -> [global (T, 3, G, G), local_1 .. local_n (T, 3, L, L)], normalised."""
    t, n = len(images), config.n_local
    plan = plan_crops(rng, np.array([[images[0].height, images[0].width]]), t, config)
    s, g, size = config.clip_size, config.global_size, config.local_size
    clips = [im.resize((s, s), Image.BILINEAR, box=tuple(int(v) for v in plan.clip_boxes[0])) for im in images]
    views = [c.resize((g, g), Image.BICUBIC, box=tuple(int(v) for v in plan.global_boxes[0])) for c in clips]
    if plan.flips[0]:
        views = [v.transpose(Image.FLIP_LEFT_RIGHT) for v in views]
    views = colour_pil(views, plan_colours(rng, t, config.global_blur_p, config))
    locals_ = [clips[j].resize((size, size), Image.BICUBIC, box=tuple(int(v) for v in plan.local_boxes[0, v, j]))
               for v in range(n) for j in range(t)]
    locals_ = colour_pil(locals_, plan_colours(rng, n * t, config.local_blur_p, config))
    local_tensor = to_normalised_tensor(locals_).reshape(n, t, 3, size, size)
    return [to_normalised_tensor(views)] + list(local_tensor.unbind(0))


def colour_pil(images: list[Image.Image], plan: ColourPlan) -> list[Image.Image]:
    out = []
    for i, image in enumerate(images):
        if plan.jitter[i]:
            for op in plan.order[i]:
                image = PIL_OPS[op](image, float(plan.factors[i, op]))
        if plan.gray[i]:
            image = image.convert("L").convert("RGB")
        if not np.isnan(plan.blur_sigma[i]):
            image = image.filter(ImageFilter.GaussianBlur(radius=float(plan.blur_sigma[i])))
        out.append(image)
    return out


def hue_pil(image: Image.Image, shift: float) -> Image.Image:
    """torchvision's PIL adjust_hue: add shift*255 to the HSV hue byte, wrapping around."""
    h, s, v = image.convert("HSV").split()
    hue = np.asarray(h, dtype=np.uint8) + np.uint8(int(shift * 255) % 256)
    return Image.merge("HSV", (Image.fromarray(hue, "L"), s, v)).convert("RGB")


PIL_OPS = (lambda im, f: ImageEnhance.Brightness(im).enhance(f),
           lambda im, f: ImageEnhance.Contrast(im).enhance(f),
           lambda im, f: ImageEnhance.Color(im).enhance(f),
           hue_pil)


def to_normalised_tensor(images: list[Image.Image]) -> torch.Tensor:
    x = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
