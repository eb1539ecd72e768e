from __future__ import annotations

import pytest

from tests.videos import make_video


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
