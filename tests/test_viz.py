"""`wtours viz` on a briefly trained tiny checkpoint: the grid's layout, masks equal to the tracker's, the GIF."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from tests.cli import CliResult, assert_clean_error, run_wtours
from tests.http_server import FileServer
from wtours.clips.augment import IMAGENET_MEAN, IMAGENET_STD
from wtours.clips.epoch import ClipConfig, clip_starts
from wtours.clips.spec import resolve
from wtours.dora import DoRA
from wtours.errors import EXIT_FAILURE, EXIT_INCOMPLETE
from wtours.models.vit import cls_attention
from wtours.viz.run import pick_starts

TINY = ["--arch", "vit_micro", "--out-dim", "64", "--batch-size", "2", "--clip-frames", "2", "--n-local", "2",
        "--workers", "0", "--lr", "0.002", "--warmup-epochs", "0", "--log-every", "1"]
VIRIDIS_LOW, VIRIDIS_HIGH = (68, 1, 84), (253, 231, 37)




def train_tiny(root: Path, out: Path, *extra: str) -> CliResult:
    """A few real DoRA steps of vit_micro (3 heads) on the walk: checkpoint at out/checkpoint.pth."""
    return run_wtours(["train", "--shards", "walk", "--root", str(root), "--out", str(out), "--clips-per-shard", "1",
                       *TINY, *extra])


@pytest.fixture(scope="module")
def tiny_run(canonical_roots, tmp_path_factory) -> tuple[Path, Path]:
    """A 12 s walk (2 shards of 12 samples, tests/conftest.py) and a 3-step run's checkpoint."""
    folder = tmp_path_factory.mktemp("viz")
    root = canonical_roots.copy("walk-12s", folder / "root")
    done = train_tiny(root, folder / "run", "--steps", "3")
    assert done.returncode == 0, done.stderr
    return root, folder / "run" / "checkpoint.pth"


def load_teacher(checkpoint: Path) -> DoRA:
    model = DoRA("vit_micro", out_dim=64, n_local=2)
    model.load_official_checkpoint(checkpoint)
    return model.eval()


def shard_jpegs(shard: str, frames: list[int]) -> list[bytes]:
    """The clip's JPEGs read straight from the tar, by source frame number."""
    by_frame = {}
    with tarfile.open(shard) as tar:
        for member in tar.getmembers():
            if member.name.endswith(".json"):
                meta = json.loads(tar.extractfile(member).read())
                by_frame[meta["frame"]] = tar.extractfile(member.name[:-5] + ".jpg").read()
    return [by_frame[f] for f in frames]


def squares(jpgs: list[bytes]) -> np.ndarray:
    """The documented view: short side to 224 (bicubic) and centre crop 224."""
    return np.stack([np.asarray(ImageOps.fit(Image.open(io.BytesIO(j)).convert("RGB"), (224, 224),
                                             Image.Resampling.BICUBIC)) for j in jpgs])


def normalised(frames: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(frames).float().permute(0, 3, 1, 2) / 255
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((x - mean) / std)[None]  # (1, T, 3, 224, 224)


def cell(image: np.ndarray, header: int, row: int, column: int, size: int = 224) -> np.ndarray:
    return image[header + row * size: header + (row + 1) * size, column * size: (column + 1) * size]


@pytest.mark.slow
def test_grid_layout_and_masks_are_the_trackers(tiny_run, tmp_path):
    root, checkpoint = tiny_run
    out = tmp_path / "viz"
    done = run_wtours(["viz", str(checkpoint), "--shards", "walk", "--root", str(root), "--clips", "2", "--frames", "4",
                       "--stride", "1", "--heads", "2,0", "--out", str(out)])
    assert done.returncode == 0, done.stderr
    index = json.loads((out / "index.json").read_text())
    assert index["heads"] == [2, 0] and index["objects"] == 2 and index["arch"] == "vit_micro"
    assert index["columns"] == ["frame", "head 0*", "head 1", "head 2*", "object 1", "object 2"]
    assert len(index["clips"]) == 2
    model = load_teacher(checkpoint)
    heads, header, t_count = torch.tensor([2, 0]), index["header"], 4
    differing_objects = 0
    for clip in index["clips"]:
        grid = np.asarray(Image.open(out / clip["png"]).convert("RGB"))
        assert grid.shape == (header + t_count * 224, (1 + 3 + 2) * 224, 3)  # rows = frames; 1 + heads + K columns
        frames = squares(shard_jpegs(clip["shard"], clip["source_frames"]))
        view = normalised(frames)
        _, _, masks = model.teacher_pass(view, heads)  # (K, 1, T, 196): the trainer's tracker, run here
        masks = masks[:, 0].reshape(2, t_count, 14, 14).numpy()
        with torch.no_grad():
            last = model.teacher.backbone.forward_last_attention(view[0])
        attention = cls_attention(last.queries, last.keys)[:, :, 1:].reshape(t_count, 3, 14, 14)
        for t in range(t_count):
            assert np.array_equal(cell(grid, header, t, 0), frames[t])
            for j in range(3):  # [CLS] attention: one colour per patch, its extremes at the scale's ends
                heat = cell(grid, header, t, 1 + j)
                blocks = heat.reshape(14, 16, 14, 16, 3)
                assert (blocks == blocks[:, :1, :, :1]).all()
                a = attention[t, j].numpy()
                (r_hi, c_hi), (r_lo, c_lo) = (np.unravel_index(i, a.shape) for i in (a.argmax(), a.argmin()))
                assert tuple(blocks[r_hi, 0, c_hi, 0]) == VIRIDIS_HIGH
                assert tuple(blocks[r_lo, 0, c_lo, 0]) == VIRIDIS_LOW
            for k in range(2):
                pixels = cell(grid, header, t, 4 + k).astype(int)
                inside = masks[k, t].repeat(16, 0).repeat(16, 1)
                tinted = np.rint(frames[t] * 0.5 + np.array(index["colours"][k]) * 0.5)
                dark = np.rint(frames[t] * index["outside"])
                assert np.array_equal(pixels[inside], tinted[inside])  # binary: two formulas, split by the mask
                assert np.array_equal(pixels[~inside], dark[~inside])
            differing_objects += not np.array_equal(masks[0, t], masks[1, t])
        assert np.allclose(clip["coverage"], masks.reshape(2, t_count, -1).mean(axis=2), atol=1e-4)
        gif = Image.open(out / clip["gif"])
        assert gif.n_frames == t_count and gif.size == ((1 + 2) * 224, 224 + 6)
        gif.seek(2)
        first_cell = np.asarray(gif.convert("RGB"))[:224, :224].astype(int)
        assert np.abs(first_cell - frames[2]).mean() < 12  # the frame, through GIF's 256-colour palette
    assert differing_objects > 0  # the masks are per object, not one mask repeated


@pytest.mark.slow
def test_drawn_heads_default_clips_and_errors(tiny_run, tmp_path):
    root, checkpoint = tiny_run
    out = tmp_path / "viz"
    done = run_wtours(["viz", str(checkpoint), "--shards", "walk", "--root", str(root), "--clips", "1", "--frames", "3",
                       "--out", str(out), "--seed", "5"])
    assert done.returncode == 0, done.stderr
    index = json.loads((out / "index.json").read_text())
    drawn = DoRA("vit_micro", out_dim=64, n_local=2).draw_heads(torch.Generator().manual_seed(5)).tolist()
    assert index["heads"] == drawn and sorted(drawn) == [0, 1, 2]  # K = 3 distinct heads of 3
    clip = index["clips"][0]
    assert (out / clip["png"]).is_file() and (out / clip["gif"]).is_file()
    assert Image.open(out / clip["png"]).size == ((1 + 3 + 3) * 224, index["header"] + 3 * 224)
    assert len(clip["coverage"]) == 3 and all(len(c) == 3 for c in clip["coverage"])

    bare = tmp_path / "backbone.pth"
    assert run_wtours(["export", str(checkpoint), "--out", str(bare)]).returncode == 0
    refused = run_wtours(["viz", str(bare), "--shards", "walk", "--root", str(root), "--out", str(out)])
    assert refused.returncode == 2 and "no 'teacher'" in refused.stderr and "hint" in refused.stderr
    wrong = run_wtours(["viz", str(checkpoint), "--shards", "walk", "--root", str(root), "--heads", "0,7"])
    assert wrong.returncode == 2 and "heads 0..2" in wrong.stderr


@pytest.mark.slow
def test_clips_are_spread_evenly_in_time(tiny_run):
    root, _ = tiny_run
    shards = resolve("walk", root)
    config = ClipConfig(frames=3, stride=1.0)
    everything = [(r.url, s) for r in shards for s in clip_starts(r, config)]
    picked = pick_starts(shards, config, 3)
    flat = [(url, s) for url, starts in picked.items() for s in sorted(starts)]
    assert len(flat) == 3
    positions = [everything.index(p) for p in flat]
    assert positions == sorted(positions) and positions[0] < len(everything) / 3 <= positions[1]
    assert positions[2] >= 2 * len(everything) / 3
    assert sum(len(s) for s in pick_starts(shards, config, 10_000).values()) == len(everything)


@pytest.mark.slow
def test_a_damaged_remote_shard_is_named_and_what_could_be_read_is_drawn(tiny_run, tmp_path):
    """Shards served over http, one with its samples zeroed on the server (a tar reads zeros as its end: no
    error, just no samples) or cut short: the clips from the intact shard are drawn and the run ends with exit
    status 3 naming the damaged one; with both damaged, no picture and exit status 1. No hint refers to
    warnings that were not shown."""
    root, checkpoint = tiny_run
    served = tmp_path / "served" / "walk"
    shutil.copytree(root / "shards" / "walk", served)
    damaged = served / "walk-000001.tar"
    intact = damaged.read_bytes()
    with FileServer(served.parent, content_type="application/x-tar") as server:
        args = ["viz", str(checkpoint), "--shards", server.url("walk/index.json"), "--clips", "2", "--frames", "2"]
        for damage in (intact[:2048] + bytes(len(intact) - 2048), intact[:len(intact) // 3]):
            damaged.write_bytes(damage)
            out = tmp_path / f"viz-{len(list(tmp_path.glob('viz-*')))}"
            result = run_wtours([*args, "--out", str(out), "-q"])
            stderr = assert_clean_error(result, EXIT_INCOMPLETE)
            assert f"1 of 2 clips could not be read from {server.url('walk/walk-000001.tar')}" in stderr
            assert "warnings above" not in stderr
            index = json.loads((out / "index.json").read_text())
            assert [c["shard"] for c in index["clips"]] == [server.url("walk/walk-000000.tar")]
            assert sorted(p.name for p in out.iterdir()) == sorted([*(index["clips"][0][k] for k in ("png", "gif")),
                                                                   "index.json"])
        (served / "walk-000000.tar").write_bytes(bytes(2048))
        result = run_wtours([*args, "--out", str(tmp_path / "none")])
        stderr = assert_clean_error(result, EXIT_FAILURE)
        assert "no picture written: 2 of 2 clips could not be read" in stderr
        assert not any((tmp_path / "none").iterdir())
