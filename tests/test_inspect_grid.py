"""`wtours inspect SPEC --grid N OUT.png`: N clips as the trainer's loader reads them, their frames and multi-crop
views, drawn into a PNG that is read back here."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.cli import run_wtours
from tests.videos import sharded_root
from wtours.clips.augment import MultiCropConfig
from wtours.clips.epoch import ClipConfig
from wtours.clips.spec import resolve
from wtours.clips.views import CELL, HEADER, LABEL_WIDTH, trainer_views


def test_grid_draws_the_clips_frames_and_views(tmp_path):
    root = sharded_root(tmp_path, seconds=8.0, samples_per_shard=8)
    out = tmp_path / "figs" / "views.png"
    result = run_wtours(["inspect", "walk", "--root", str(root), "--clip-frames", "3", "--grid", "2", str(out),
                         "--n-local", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: 2 clip(s)" in result.stderr
    image = np.asarray(Image.open(out).convert("RGB"))
    rows = 1 + 1 + 2  # frames, the global view, 2 local views
    assert image.shape == (2 * (HEADER + rows * CELL), LABEL_WIDTH + 3 * CELL, 3)
    for clip in range(2):
        for row in range(rows):
            for t in range(3):
                top, left = clip * (HEADER + rows * CELL) + HEADER + row * CELL, LABEL_WIDTH + t * CELL
                cell = image[top + 2:top + CELL - 2, left + 2:left + CELL - 2].astype(float)
                assert cell.std() > 10, (clip, row, t)  # a picture, not an empty cell


def test_the_views_are_the_loaders(tmp_path):
    """The global view of the grid is the loader's own: the clip's frames, cropped and scaled (a moving test
    pattern: the view's mean colour is near its frame's, far from another clip's is not required)."""
    root = sharded_root(tmp_path, seconds=8.0, samples_per_shard=8)
    shards = resolve("walk", root)
    clips = trainer_views(shards, 2, ClipConfig(frames=2, stride=1.0), MultiCropConfig(n_local=1))
    assert len(clips) == 2 and len({c.key for c in clips}) == 2
    for clip in clips:
        assert len(clip.frames) == 2 and clip.frames[0].size == (192, 128)
        global_view, local_view = clip.views
        assert global_view.shape == (2, 224, 224, 3) and local_view.shape == (2, 112, 112, 3)
        assert global_view.dtype == np.uint8 and global_view.std() > 10
