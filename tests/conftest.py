from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# Before torch is imported (here first): on two cores shared with other runs, torch's thread pool as wide
# as the machine spins against the other processes and small tensor ops get ten times slower. One
# intra-op thread per test process, and per process it starts, keeps the tests calm; no test is about
# that pool's width. A value the caller set wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tests.videos import make_video, sharded_root  # noqa: E402

# The canonical sharded roots: a moving test pattern added as `walk` and sharded at 2 fps, 128 px
# (tests/videos.sharded_root), by length and samples per shard. Each is built at most once per run.
CANONICAL_ROOTS = {
    "walk-20s": (20.0, 10),  # 4 shards of 10 samples
    "walk-12s": (12.0, 12),  # 2 shards of 12
    "walk-8s": (8.0, 8),  # 2 shards of 8
}


class CanonicalRoots:
    """Builds each canonical root on first use and hands out copies, so no test sees another's writes."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.built: dict[str, Path] = {}

    def copy(self, name: str, to: Path) -> Path:
        """A copy of canonical root `name` at `to` (a folder that does not exist yet); returns `to`."""
        if name not in self.built:
            seconds, samples_per_shard = CANONICAL_ROOTS[name]
            self.built[name] = sharded_root(self.tmp_path_factory.mktemp(name), seconds, samples_per_shard)
        shutil.copytree(self.built[name], to)  # the video's symlink becomes a copy of the video
        return to


@pytest.fixture(scope="session")
def canonical_roots(tmp_path_factory) -> CanonicalRoots:
    return CanonicalRoots(tmp_path_factory)


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a fresh tmpfs of `size` bytes under tmp_path (a real full disk); the test is skipped where
    mounting is not permitted (it needs root). Unmounted after the test."""
    mounted = []

    def mount(size: int) -> Path:
        folder = tmp_path / f"tmpfs{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        mounted.append(folder)
        return folder

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture(scope="session")
def small_video(tmp_path_factory):
    """3 s, 320x240, 30 fps H.264 (faststart, so a cut-off copy still probes)."""
    return make_video(tmp_path_factory.mktemp("videos") / "small.mp4", seconds=3.0, faststart=True)


@pytest.fixture
def no_xet(monkeypatch):
    """huggingface_hub in this process sends LFS bodies over plain HTTP: with hf_xet installed it would use
    Xet whatever tests/hub_server.py says. Hub test modules use it with `pytestmark`."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)


@pytest.fixture(autouse=True)
def fresh_shard_reader():
    """What the shard reader remembers per process (shards that failed a check, sets warned about) starts
    empty for each test: a URL reused by another test is not refused for an earlier test's fault."""
    import sys

    yield
    if "wtours.shard.read" in sys.modules:
        sys.modules["wtours.streams"].FAILED_SHARDS.clear()
        sys.modules["wtours.shard.read"]._WARNED.clear()


def write_digits(folder: Path, every: int = 1) -> tuple[Path, Path]:
    """scikit-learn's 1797 8x8 digits as 32x32 PNGs: train/<digit>/, and every 4th image in val/<digit>/."""
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    for i in range(0, len(digits.images), every):
        split = "val" if (i // every) % 4 == 0 else "train"
        target = folder / split / str(digits.target[i])
        target.mkdir(parents=True, exist_ok=True)
        pixels = np.rint(digits.images[i] * 255 / 16).astype(np.uint8)  # 0..16 grey levels
        Image.fromarray(pixels).resize((32, 32), Image.Resampling.NEAREST).save(target / f"{i:04d}.png")
    return folder / "train", folder / "val"
