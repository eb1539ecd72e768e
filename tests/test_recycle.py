"""Reused worker output memory (wtours/clips/recycle.py), through real DataLoader workers: a set is
reused only once the consumer holds nothing of it, and the batches are those an in-process loader makes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import pytest
import torch

from tests.videos import run_ffmpeg
from wtours.clips.epoch import ClipConfig
from wtours.clips.pipeline import ClipBatch, ClipDataset, LoaderConfig, make_loader
from wtours.clips.recycle import SETS_PER_WORKER, Leases, OutputPool
from wtours.clips.spec import resolve
from wtours.fetch.local import add_local
from wtours.layout import Layout
from wtours.shard.params import RunOptions, ShardParams
from wtours.shard.run import shard_video

CONFIG = LoaderConfig(batch_size=2, workers=0, clip=ClipConfig(frames=2, stride=0.5), shuffle_buffer=4)


# Optional depth (issue 22): the reuse protocol's tests run in the full suite, not the edit-test loop.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def walk(tmp_path_factory) -> Layout:
    """A 20 s walk sharded at 2 fps: 19 batches of 2 clips per epoch."""
    folder = tmp_path_factory.mktemp("recycle")
    video = folder / "walk.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=192x128:rate=10:duration=20", "-c:v", "libx264", "-preset",
                "ultrafast", "-pix_fmt", "yuv420p", str(video)])
    layout = Layout(folder / "root")
    add_local(video, "walk", layout.root, mode="symlink", say=lambda m: None)
    shard_video(layout, "walk", ShardParams(fps=2.0, short_side=128, samples_per_shard=20),
                RunOptions(workers=1, progress=False), say=lambda m: None)
    return layout


def digest(batch: ClipBatch) -> str:
    return hashlib.sha256(b"".join(v.numpy().tobytes() for v in batch)).hexdigest()


def in_process(walk: Layout, epoch: int = 0) -> list[tuple[list[str], str]]:
    """The batches of one worker's plan, made in this process."""
    dataset = ClipDataset(resolve("walk", walk.root), CONFIG)
    dataset.set_epoch(epoch)
    return [(batch.keys, digest(batch)) for batch in make_loader(dataset)]


def without_reuse(walk: Layout, workers: int) -> list[tuple[list[str], str]]:
    """The batches of `workers` workers, each in fresh shared memory: a plain DataLoader sets no leases."""
    dataset = ClipDataset(resolve("walk", walk.root), dataclasses.replace(CONFIG, workers=workers))
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
    batches = list(loader)
    assert all(batch.lease is None for batch in batches)
    return [(batch.keys, digest(batch)) for batch in batches]


def test_worker_sets_are_reused_once_dropped_and_give_the_in_process_batches(walk):
    """A consumer that drops each batch before asking for the next: the workers refill a few sets over
    and over, and every batch is bit for bit the one made in fresh memory."""
    dataset = ClipDataset(resolve("walk", walk.root), dataclasses.replace(CONFIG, workers=2))
    seen, leases = [], []
    for batch in make_loader(dataset):
        seen.append((batch.keys, digest(batch)))
        leases.append(batch.lease)
    assert seen == without_reuse(walk, 2)
    assert len(seen) >= 3 * SETS_PER_WORKER
    assert all(lease is not None for lease in leases)  # never short of a free set
    uses = Counter((lease.worker, lease.cell) for lease in leases)
    assert len(uses) <= 2 * 4 and max(uses.values()) >= 4  # a few sets per worker, each used again and again


def test_a_held_batch_or_any_view_of_it_is_never_overwritten(walk):
    """Holding a whole batch, one local view's slice, or a numpy array of a global view keeps that set
    out of the pool until it is dropped; the rest of the batches still reuse sets."""
    dataset = ClipDataset(resolve("walk", walk.root), dataclasses.replace(CONFIG, workers=2))
    held: list[tuple[object, bytes, object]] = []  # (what is held, its bytes when delivered, its batch's lease)
    leases = []
    for i, batch in enumerate(make_loader(dataset)):
        leases.append(batch.lease)
        part: object = None
        if i == 1:
            part = batch
        elif i == 4:
            part = batch[3][1, 0]  # a slice of the third local view's block
        elif i == 7:
            part = batch[0].numpy()[0]  # a numpy array on the global views
        if part is not None:
            data = b"".join(v.numpy().tobytes() for v in part) if isinstance(part, ClipBatch) else (
                part.numpy().tobytes() if isinstance(part, torch.Tensor) else part.tobytes())
            held.append((part, data, batch.lease))
    for part, data, _ in held:
        now = b"".join(v.numpy().tobytes() for v in part) if isinstance(part, ClipBatch) else (
            part.numpy().tobytes() if isinstance(part, torch.Tensor) else part.tobytes())
        assert now == data
    for i, (_, _, lease) in zip((1, 4, 7), held):
        later = [other for other in leases[i + 1:] if other is not None]
        assert all((other.worker, other.cell) != (lease.worker, lease.cell) for other in later)
    assert sum(lease is not None for lease in leases[8:]) == len(leases[8:])  # the others kept being reused


def test_a_consumer_that_keeps_everything_gets_fresh_memory(walk):
    """list(loader) keeps every batch: once a worker's sets are all out, its batches come in fresh shared
    memory (no lease), and nothing already delivered changes."""
    dataset = ClipDataset(resolve("walk", walk.root), dataclasses.replace(CONFIG, workers=1))
    batches = list(make_loader(dataset))
    assert [b.lease is None for b in batches] == [False] * SETS_PER_WORKER + [True] * (len(batches) - SETS_PER_WORKER)
    assert [(b.keys, digest(b)) for b in batches] == in_process(walk)


def test_each_epoch_has_its_own_table(walk):
    """A batch of the previous epoch still held neither blocks nor frees a set of the next epoch's
    workers: they start from a table of their own (cell 0 free), and the old batch stays as it was."""
    dataset = ClipDataset(resolve("walk", walk.root), dataclasses.replace(CONFIG, workers=1))
    first = next(iter(make_loader(dataset)))
    assert first.lease is not None and first.lease.cell == 0
    kept = digest(first)
    dataset.set_epoch(1)
    batches = []
    for batch in make_loader(dataset):
        batches.append((batch.keys, digest(batch)))
        if len(batches) == 1:
            assert batch.lease is not None and batch.lease.cell == 0
    assert batches == in_process(walk, epoch=1)
    assert digest(first) == kept
    assert dataset.leases is None  # the workers took their copy; no later loader shares the table


def test_reuse_can_be_turned_off(walk):
    dataset = ClipDataset(resolve("walk", walk.root), dataclasses.replace(CONFIG, workers=1))
    batches = [(b.keys, digest(b), b.lease) for b in make_loader(dataset, reuse_outputs=False)]
    assert all(lease is None for _, _, lease in batches)
    assert [(keys, d) for keys, d, _ in batches] == in_process(walk)


def test_the_pool_takes_only_free_cells_and_marks_them_when_lent():
    leases = Leases(workers=1, sets=2)
    pool = OutputPool(leases, 0)
    shapes = [(2, 3), (4,)]
    first, cell = pool.take(shapes)
    assert cell == 0 and [tuple(t.shape) for t in first] == shapes and first[0].is_shared()
    assert pool.take(shapes)[1] == 0  # not lent yet: still free
    lease = pool.lend(cell)
    assert lease is not None and int(leases.cells[0, 0]) == lease.serial
    second, cell = pool.take(shapes)
    assert cell == 1
    pool.lend(cell)
    third, cell = pool.take(shapes)
    assert cell is None and third[0].is_shared()  # all out: fresh shared memory
    assert pool.take([(5,)])[1] is None
    leases.cells[0, 1] = 0
    again, cell = pool.take([(5,)])
    assert cell == 1 and tuple(again[0].shape) == (5,)  # another batch shape: the set is remade


# ----------------------------------------------------------------------------- a small /dev/shm, for real

SMALL_SHM = 'mount -t tmpfs -o size="$SHM_SIZE" tmpfs /dev/shm && exec "$@"'


def with_small_shm(size: str, argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run argv with its own /dev/shm of `size` (a tmpfs in a private mount namespace: needs root)."""
    return subprocess.run(["unshare", "-m", "sh", "-c", SMALL_SHM, "sh", *argv], env={**os.environ, "SHM_SIZE": size},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def small_shm_possible():
    if shutil.which("unshare") is None or with_small_shm("1m", ["true"]).returncode != 0:
        pytest.skip("a private /dev/shm needs unshare and root (CAP_SYS_ADMIN)")


LOADER_SCRIPT = """
import hashlib, json, sys
from wtours.clips.epoch import ClipConfig
from wtours.clips.pipeline import ClipDataset, LoaderConfig, make_loader
from wtours.clips.spec import resolve
config = LoaderConfig(batch_size=2, workers=1, clip=ClipConfig(frames=2, stride=0.5), shuffle_buffer=4)
rows = []
for batch in make_loader(ClipDataset(resolve("walk", sys.argv[1]), config)):
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in batch)).hexdigest()
    rows.append([batch.keys, digest, batch.lease.cell if batch.lease else None])
print(json.dumps(rows))
"""


def test_a_small_dev_shm_makes_workers_wait_for_their_sets(walk, small_shm_possible):
    """/dev/shm with room for two of a worker's sets (1.5 MB each here; a container's default is 64 MB):
    the worker waits for the consumer to free one instead of failing, and the batches are the same."""
    done = with_small_shm("3500k", [sys.executable, "-c", LOADER_SCRIPT, str(walk.root)])
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout)
    assert [(keys, digest) for keys, digest, _ in rows] == in_process(walk)
    assert {cell for _, _, cell in rows} == {0, 1}


ONE_SET_SCRIPT = """
import sys, time
from wtours.clips.epoch import ClipConfig
from wtours.clips.pipeline import ClipDataset, LoaderConfig, make_loader
from wtours.clips.recycle import SharedMemoryFull
from wtours.clips.spec import resolve
config = LoaderConfig(batch_size=2, workers=1, clip=ClipConfig(frames=2, stride=0.5), shuffle_buffer=4)
start = time.monotonic()
try:
    for batch in make_loader(ClipDataset(resolve("walk", sys.argv[1]), config)):
        pass
except SharedMemoryFull:
    print(time.monotonic() - start)
"""
WORKER_WAIT_S = 60.0  # how long a worker would wait for a set before it failed (OutputPool's wait_seconds)


def test_room_for_one_set_fails_at_once(walk, small_shm_possible):
    """With room for one set only, the worker cannot wait: the consumer's loop variable holds that set
    until the next batch arrives, and that is the batch the worker would fill. It fails at once, with
    SharedMemoryFull in the consumer, not after the worker's wait for a set. The loop's own clock tells
    "at once" from "after the wait", so a slow start of the process fails nothing."""
    done = with_small_shm("2200k", [sys.executable, "-c", ONE_SET_SCRIPT, str(walk.root)])
    assert done.returncode == 0 and done.stdout.strip(), done.stderr[-3000:]  # SharedMemoryFull was raised
    assert float(done.stdout) < WORKER_WAIT_S / 2


BREAK_SCRIPT = """
import sys, time
from wtours.clips.epoch import ClipConfig
from wtours.clips.pipeline import ClipDataset, LoaderConfig, make_loader
from wtours.clips.spec import resolve
config = LoaderConfig(batch_size=2, workers=1, clip=ClipConfig(frames=2, stride=0.5), shuffle_buffer=4)
kept = []
for batch in make_loader(ClipDataset(resolve("walk", sys.argv[1]), config)):
    kept.append(batch)  # both of the worker's sets stay out: it waits for one
    if len(kept) == 2:
        time.sleep(1)
        start = time.monotonic()
        break
print(time.monotonic() - start)
"""


def test_leaving_the_loop_releases_a_waiting_worker(walk, small_shm_possible):
    """Breaking out while the worker waits for a set: the loader tells it to give up, so the DataLoader's
    shutdown joins it at once (it used to wait 5 s per worker, then terminate it)."""
    done = with_small_shm("3500k", [sys.executable, "-c", BREAK_SCRIPT, str(walk.root)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout) < 4.0


def test_no_room_for_one_batch_is_a_clear_error(walk, tmp_path, small_shm_possible):
    done = with_small_shm("1m", [sys.executable, "-m", "wtours", "train", "--shards", "walk", "--root",
                                 str(walk.root), "--out", str(tmp_path / "run"), "--arch", "vit_micro", "--steps",
                                 "2", "--out-dim", "256", "--batch-size", "2", "--workers", "1", "--clip-frames", "2",
                                 "--clip-stride", "0.5"])
    assert done.returncode == 1, done.stderr[-3000:]
    assert "error: no room in shared memory for a batch's views" in done.stderr
    assert "hint: DataLoader workers hand batches over in /dev/shm" in done.stderr and "--shm-size" in done.stderr
    assert "Traceback" not in done.stderr
