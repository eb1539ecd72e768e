"""The public clip API (wtours.clips.Clips, DoraViews, ClipDataModule) and docs/loader.md's examples for
Lightning and plain DDP, on real shards, the real Lightning Trainer and a real torchrun."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_clips import undecodable, write_tar
from tests.test_docs import fenced_blocks
from wtours.clips import ClipItem, Clips, ClipUndecodable, DoraViews
from wtours.clips.augment import MultiCropConfig
from wtours.clips.epoch import ClipConfig, ShardRead, epoch_starts
from wtours.clips.spec import resolve
from wtours.clips.stages import Problems, open_shards, shard_clips, tar_samples
from wtours.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
SMALL_VIEWS = MultiCropConfig(clip_size=48, global_size=32, local_size=16, n_local=2)


@pytest.fixture(scope="module")
def root(canonical_roots, tmp_path_factory) -> Path:
    """`walk`: 20 s at 2 fps, 4 shards of 10 samples (192x128 frames)."""
    return canonical_roots.copy("walk-20s", tmp_path_factory.mktemp("clip-api") / "root")


def every_clip(root: Path, frames: int, stride: float):
    config = ClipConfig(frames, stride)
    shards = resolve("walk", root)
    return list(shard_clips([ShardRead.whole(s, epoch_starts(s, config, 0)) for s in shards], config, Problems()))


def epoch_batches(clips: Clips, epoch: int, skip: int = 0) -> list:
    clips.set_epoch(epoch, skip_batches=skip)
    return list(clips.loader())


def test_every_rank_gets_its_share_of_every_clip_with_times_and_frame_numbers(root):
    expected = {clip.key: clip for clip in every_clip(root, 3, 1.0)}
    seen, lengths = [], []
    for rank in range(2):
        clips = Clips("walk", frames=3, stride=1.0, batch_size=4, workers=2, rank=rank, world_size=2, root=root)
        batches = epoch_batches(clips, 0)
        lengths.append((len(batches), len(clips)))
        for batch in batches:
            assert batch.data.shape == (4, 3, 128, 192, 3) and batch.data.dtype == torch.uint8
            for row, key in enumerate(batch.keys):
                meta = expected[key].meta
                assert batch.videos[row] == "walk"
                assert batch.times[row].tolist() == [m["t"] for m in meta]
                assert batch.frame_numbers[row].tolist() == [m["frame"] for m in meta]
                assert key == f"walk-{meta[0]['frame']:08d}"
            seen += batch.keys
    assert np.allclose(np.diff(batch.times.numpy(), axis=1), 1.0, atol=0.05)  # stride apart
    assert lengths[0] == lengths[1] == (lengths[0][1], clips.plan().steps)  # len() exact, the same on both ranks
    assert set(seen) == set(expected) and len(seen) - len(expected) < 2 * 4  # every clip once, plus padding
    # the frames are the stored JPEGs decoded (PIL's decoder, the authors')
    clip = expected[batch.keys[0]]
    assert torch.equal(batch.data[0, 2], torch.from_numpy(np.asarray(Image.open(io.BytesIO(clip.jpgs[2])))))


def test_jpeg_output_gives_the_stored_bytes(root):
    expected = {clip.key: clip for clip in every_clip(root, 2, 0.5)}
    clips = Clips("walk", frames=2, stride=0.5, output="jpeg", batch_size=3, root=root)
    for batch in epoch_batches(clips, 1):
        assert [list(jpgs) for jpgs in batch.data] == [expected[key].jpgs for key in batch.keys]


def test_a_resumed_epoch_gives_the_same_transformed_batches(root):
    """The transform draws from the item's seed: resuming at batch k gives the uninterrupted batches k..."""

    def noisy(item: ClipItem) -> torch.Tensor:
        return item.frames.float().mean() + torch.from_numpy(np.random.default_rng(item.seed).normal(size=3))

    clips = Clips("walk", frames=2, stride=1.0, batch_size=3, workers=2, transform=noisy, root=root)
    whole = epoch_batches(clips, 1)
    assert len(whole) == len(clips) and whole[0].data.shape == (3, 3)
    for skip in (1, 4):
        resumed = epoch_batches(clips, 1, skip)
        assert [b.keys for b in resumed] == [b.keys for b in whole[skip:]]
        assert all(torch.equal(a.data, b.data) for a, b in zip(resumed, whole[skip:]))
    assert [b.keys for b in epoch_batches(clips, 2)] != [b.keys for b in whole]  # another epoch, another order


def test_dora_views_are_one_transform(root):
    clips = Clips("walk", frames=2, stride=1.0, output="jpeg", batch_size=2, transform=DoraViews(SMALL_VIEWS),
                  root=root)
    first, again = epoch_batches(clips, 0)[0], epoch_batches(clips, 0)[0]
    assert [tuple(v.shape) for v in first.data] == [(2, 2, 3, 32, 32), (2, 2, 3, 16, 16), (2, 2, 3, 16, 16)]
    assert all(v.dtype == torch.uint8 for v in first.data)
    assert all(torch.equal(a, b) for a, b in zip(first.data, again.data))  # drawn from the items' seeds
    with pytest.raises(UsageError, match="output='jpeg'"):
        epoch_batches(Clips("walk", frames=2, transform=DoraViews(SMALL_VIEWS), root=root), 0)


def test_an_undecodable_clip_is_counted_and_its_place_taken(root):
    def refuse(item: ClipItem) -> str:
        if item.key == "walk-00000000":
            raise ClipUndecodable("frame 0 is not a decodable JPEG")
        return item.key

    clips = Clips("walk", frames=2, stride=1.0, batch_size=3, transform=refuse, collate=list, root=root)
    batches = epoch_batches(clips, 0)
    assert clips.problems.bad_clips == 1 and len(batches) == len(clips)
    assert all(len(b.data) == 3 and b.data == b.keys for b in batches)  # the metadata follows the replacing clip
    assert "walk-00000000" not in {key for b in batches for key in b.keys}


def test_a_clip_with_a_frame_that_does_not_decode_is_counted_and_replaced(root, tmp_path, caplog):
    """The real decoder on a whole JPEG whose frame header is broken (it passes jpeg_check)."""
    source = resolve("walk", root)[0]
    problems = Problems()
    samples = list(tar_samples(open_shards([source], problems), problems))
    write_tar(tmp_path / source.entry.name, [member for sample in samples for member in (
        (f"{sample.key}.jpg", undecodable(sample.jpg) if sample.index == 4 else sample.jpg),
        (f"{sample.key}.json", sample.json))])
    shard = dataclasses.replace(source, url=str(tmp_path / source.entry.name))
    affected = {clip.key for clip in every_clip(root, 3, 1.0) if samples[4].jpg in clip.jpgs}
    assert len(affected) == 3  # frames 2 cells apart: the clips starting 4, 2 and 0 cells before it
    clips = Clips([shard], frames=3, stride=1.0, batch_size=3, root=root)
    with caplog.at_level(logging.WARNING):
        batches = epoch_batches(clips, 0)
    assert clips.problems.bad_clips == len(affected) and len(batches) == len(clips)
    assert sum("does not decode" in r.message for r in caplog.records) == 1
    assert all(b.data.shape[0] == 3 for b in batches) and not affected & {k for b in batches for k in b.keys}


def test_a_batch_moves_every_tensor_and_keeps_the_rest(root):
    clips = Clips("walk", frames=2, batch_size=2, transform=lambda item: {"frames": item.frames, "key": item.key},
                  root=root)
    batch = epoch_batches(clips, 0)[0]
    moved = batch.to("meta")
    assert moved.data["frames"].device.type == moved.times.device.type == moved.frame_numbers.device.type == "meta"
    assert moved.data["frames"].shape == (2, 2, 128, 192, 3) and moved.data["key"] == batch.keys == moved.keys


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinning needs CUDA")
def test_a_pinned_loader_pins_the_batches(root):
    clips = Clips("walk", frames=2, batch_size=2, workers=1, root=root)
    clips.set_epoch(0)
    batch = next(iter(clips.loader(pin_memory=True)))
    assert batch.data.is_pinned() and batch.times.is_pinned()


def test_bad_arguments_say_what_to_do(root):
    with pytest.raises(UsageError, match="'uint8'"):
        Clips("walk", output="png", root=root)
    with pytest.raises(UsageError, match="rank 2 of world size 2"):
        Clips("walk", rank=2, world_size=2, root=root)


@pytest.mark.slow  # importing Lightning takes several seconds
def test_the_lightning_datamodule_trains_epoch_by_epoch_and_resumes_where_it_stopped(root, tmp_path):
    """A real Trainer on CPU: each epoch's batches are Clips' for that epoch, and a run restored from a
    checkpoint (mid-epoch, or at an epoch's end) gets the batches the uninterrupted run got after it."""
    lightning = pytest.importorskip("lightning")
    from lightning.pytorch.callbacks import ModelCheckpoint

    from wtours.clips import ClipDataModule

    seen: list[tuple[int, int, list[str]]] = []

    class Tiny(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 1)

        def training_step(self, batch, batch_idx):
            seen.append((self.current_epoch, batch_idx, list(batch.keys)))
            return self.linear(batch.data.float().mean(dim=(1, 2, 3)) / 255).pow(2).mean()  # (B, 3) -> loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def fit(trainer: dict, **options) -> None:
        trainer = lightning.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                                    enable_model_summary=False, default_root_dir=tmp_path, **trainer)
        trainer.fit(Tiny(), datamodule=ClipDataModule("walk", 2, 1.0, root=root, batch_size=4, workers=2),
                    **options)

    saved = tmp_path / "checkpoints"
    every = [ModelCheckpoint(dirpath=saved, every_n_train_steps=3, save_top_k=-1),  # step 9: 1 batch into epoch 1
             ModelCheckpoint(dirpath=saved, filename="end-{epoch}", every_n_epochs=1, save_top_k=-1,
                             save_on_train_epoch_end=True)]
    fit({"max_epochs": 3, "callbacks": every})
    clips = Clips("walk", 2, 1.0, root=root, batch_size=4, workers=2)
    expected = [(e, i, b.keys) for e in range(3) for i, b in enumerate(epoch_batches(clips, e))]
    assert seen == expected and len(clips) == 8
    whole = list(seen)
    for checkpoint, done in (("epoch=1-step=9.ckpt", 9), ("end-epoch=0.ckpt", 8)):
        seen.clear()
        fit({"max_epochs": 3, "enable_checkpointing": False}, ckpt_path=str(saved / checkpoint))
        assert seen == whole[done:], checkpoint
    # an epoch cut short by limit_train_batches ends there: its checkpoint resumes with the next epoch
    seen.clear()
    at_ends = ModelCheckpoint(dirpath=tmp_path / "short", filename="end-{epoch}", every_n_epochs=1, save_top_k=-1,
                              save_on_train_epoch_end=True)
    fit({"max_epochs": 2, "limit_train_batches": 3, "callbacks": [at_ends]})
    short = list(seen)
    assert short == [batch for batch in expected if batch[0] < 2 and batch[1] < 3]
    seen.clear()
    fit({"max_epochs": 2, "limit_train_batches": 3, "enable_checkpointing": False},
        ckpt_path=str(tmp_path / "short" / "end-epoch=0.ckpt"))
    assert seen == short[3:]


@pytest.mark.slow
def test_the_ddp_example_in_the_docs_runs_under_torchrun(root, tmp_path):
    """docs/loader.md's plain-DDP block, as written, under `torchrun --nproc-per-node 2` (gloo, CPU)."""
    blocks = [code for _, _, lang, code, _ in fenced_blocks("loader.md", (REPO / "docs" / "loader.md").read_text())
              if lang == "python" and "init_process_group" in code]
    assert len(blocks) == 1
    script = tmp_path / "ddp_clips.py"
    script.write_text(blocks[0])
    with socket.socket() as s:  # torchrun needs a real free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    venice = root.parent / "venice-root"  # the example reads `venice`: the walk's shards under that slug
    (venice / "shards").mkdir(parents=True)
    (venice / "shards" / "venice").symlink_to(root / "shards" / "walk")
    env = {**os.environ, "WTOURS_ROOT": str(venice), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                             "127.0.0.1", "--master-port", str(port), str(script)],
                            capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    clips = Clips("walk", frames=2, stride=1.0, batch_size=4, world_size=2, root=root)
    total = clips.clips_per_epoch()
    assert result.stdout.splitlines() == [f"epoch {e}: {len(clips)} steps per rank, {total} of {total} clips"
                                          for e in range(2)]
