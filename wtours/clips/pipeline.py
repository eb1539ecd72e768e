"""The clip data pipeline: an IterableDataset of DoRA batches, and the DataLoader around it.

Stages, in order: shard list (spec.resolve) -> epoch plan (epoch.plan_epoch: the epoch's clips in a
seeded shard order, cut into one contiguous stretch per (rank, worker) slot, whole batches per worker,
equal steps per rank) -> open the slot's shard parts (seek / Range) + tar to samples -> clips ->
quota -> shuffle buffer -> decode + augment (CPU) or raw JPEG batches for the GPU augmenter -> batch."""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from wtours import stop
from wtours.clips.augment import MultiCropConfig, multicrop_tensor, normalise_uint8
from wtours.clips.epoch import ClipConfig, EpochPlan, clips_per_epoch, plan_epoch
from wtours.clips.recycle import Lease, Leases, OutputPool, StorageWeakRef, storage_refs
from wtours.clips.spec import ShardRef
from wtours.clips.stages import Clip, Problems, batched, shard_clips, shuffle, take_quota
from wtours.errors import UsageError, WtoursError
from wtours.redact import shown
from wtours.shard.read import warn_unverified

log = logging.getLogger(__name__)


# --force-reinstall: where pip records an OpenCV wheel whose cv2 files are gone or mixed (removing or upgrading
# opencv-python, which shares the cv2 folder with the headless build), a plain install finds it "already satisfied"
# and changes nothing; --no-deps leaves numpy as it is.
OPENCV_HINT = ("install OpenCV >= 4.10 (wtours[train] brings it): "
               "pip install --force-reinstall --no-deps 'opencv-python-headless>=4.10'")


@dataclass(frozen=True)
class LoaderConfig:
    batch_size: int = 16
    workers: int = 4  # DataLoader worker processes per rank (0: in the main process)
    shuffle_buffer: int = 64  # clips; each holds T JPEGs (about 1 MB at the default shard settings)
    augment: str = "cpu"  # "cpu": decode + uint8 multi-crop kernels in the workers; "gpu": on the device
    clip: ClipConfig = field(default_factory=ClipConfig)
    multicrop: MultiCropConfig = field(default_factory=MultiCropConfig)

    def __post_init__(self) -> None:
        if self.augment not in ("cpu", "gpu"):
            raise WtoursError(f"augment={self.augment!r}", "use 'cpu' or 'gpu'")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1", "DoRA's authors used 16 clips per GPU")


class ClipBatch(list):
    """[global (B, T, 3, G, G), local_1 .. local_n (B, T, 3, L, L)], plus the clips' keys.

    The CPU path's batches hold uint8 views (a quarter of float32's bytes between processes): the
    consumer calls `.to(device).normalised()` to get the model's float input. GpuAugmenter's batches
    are normalised float already."""

    def __init__(self, views: list[torch.Tensor], keys: list[str], problems: dict | None = None,
                 lease: Lease | None = None, lease_refs: list[StorageWeakRef] | None = None):
        super().__init__(views)
        self.keys = keys
        self.problems = problems  # what its worker skipped since its previous batch (ClipDataset.__iter__)
        self.lease = lease  # the worker's reusable output set the views are in (`recycle`), if any
        self.lease_refs = lease_refs  # a pinned copy's: weak references to the views its worker filled

    def pin_memory(self) -> ClipBatch:
        return ClipBatch([v.pin_memory() for v in self], self.keys, self.problems, self.lease, storage_refs(self))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ClipBatch:
        return ClipBatch([v.to(device, non_blocking=non_blocking) for v in self], self.keys, self.problems)

    def normalised(self) -> ClipBatch:
        """uint8 views -> float32 ImageNet-normalised views, on the views' device (`augment.normalise_uint8`)."""
        return ClipBatch([normalise_uint8(v) for v in self], self.keys, self.problems)


@dataclass
class RawClipBatch:
    """A batch for the GPU path: the clips' JPEGs, undecoded (the DataLoader's pinning leaves it as it is)."""

    jpgs: list[torch.Tensor]  # B*T uint8 1-D tensors, clip-major
    sizes: np.ndarray  # (B, 2) frame (height, width) per clip
    keys: list[str]
    frames: int  # T
    problems: dict | None = None  # as ClipBatch.problems


@dataclass
class SlotClips:
    """A process's clips of the epoch (`ClipDataset._slot_clips`), in batch order, the skipped ones already read."""

    clips: Iterator[Clip]
    worker: int  # the DataLoader worker (0 in the main process) ...
    workers: int  # ... of this many
    role: int  # the worker whose batches it makes (`_slot_clips`: after a resume, not always `worker`)
    done: int  # of its batches, those made before the resumed position


class ClipDataset(IterableDataset):
    """DoRA batches from shards; call `set_epoch(e)` before iterating each epoch."""

    def __init__(self, shards: list[ShardRef], config: LoaderConfig, rank: int = 0, world_size: int = 1):
        super().__init__()
        if not shards:
            raise WtoursError("no shards to read", "check the --shards SPEC")
        self.shards, self.config, self.rank, self.world_size = shards, config, rank, world_size
        for ref in shards:  # here, before the workers start: once per set, not once per worker
            warn_unverified(ref.url, ref.entry)
        self.epoch = 0
        self.skip_batches = 0
        self.problems = Problems()  # filled in this process (workers: in theirs; each batch carries its delta)
        self.leases: Leases | None = None  # set by ClipLoader for its workers: they reuse their output memory

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Start `epoch`, optionally past its first `skip_batches` batches (resuming mid-epoch)."""
        self.epoch, self.skip_batches = epoch, skip_batches

    def plan(self, workers: int | None = None) -> EpochPlan:
        return plan_epoch(self.shards, self.config.clip, self.epoch, self.world_size,
                          workers or max(1, self.config.workers), self.config.batch_size)

    def clips_per_epoch(self) -> int:
        return clips_per_epoch(self.shards, self.config.clip)

    def __len__(self) -> int:
        """Batches this rank yields per epoch (the same on every rank)."""
        return self.plan().steps

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        try:
            yield from self._batches(info)
        except WtoursError as error:
            if info is None:  # the main process: raised as it is
                raise
            # sent in place of a batch, for ClipLoader to raise as it was: the DataLoader would re-raise it
            # with the worker's traceback as its message and without its hint
            yield error

    def _batches(self, info) -> Iterator[Any]:
        """The batches of this process's slot (`info`: its DataLoader worker, None in the main process)."""
        slot = self._slot_clips(info)
        counted = self.problems.counts()
        pool = OutputPool(self.leases, slot.worker) if info and self.leases is not None else None
        for number, batch in enumerate(batched(slot.clips, self.config.batch_size), start=slot.done):
            out = self._make_batch(batch, slot.role + number * slot.workers, pool)
            # what this worker skipped since its last batch travels with the batch, so the training
            # process counts every worker's (and, gathered, every rank's) skipped shards and clips
            now = self.problems.counts()
            out.problems, counted = Problems.since(counted, now), now
            yield out

    def _slot_clips(self, info) -> SlotClips:
        """This process's clips of the epoch, in batch order, past those of the batches skipped on resuming."""
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        # The DataLoader takes whole batches from its workers in turn, starting with worker 0, and the
        # plan gives worker w the batches w, w + workers, ... of the epoch. Resumed after k batches,
        # the loader still asks worker 0 first, so worker w plays the worker that made batch k + w
        # (its role): its slot, its seeds, and its share of the k skipped batches.
        role = (worker + self.skip_batches) % workers
        slot = self.rank * workers + role
        plan = self.plan(workers)
        seed = (self.config.clip.seed, self.epoch, self.rank, role)
        # the slot's stretch, then its padding; read again (take_quota) only where a shard failed to read
        clips = take_quota(lambda: shard_clips(plan.reads(slot), self.config.clip, self.problems),
                           plan.slots[slot].batches * self.config.batch_size)
        clips = shuffle(clips, self.config.shuffle_buffer, random.Random(str(seed)))
        done = len(range(role, self.skip_batches, workers))  # this role's batches before the resumed position
        # skipped before decoding (cheap); what they skipped was counted by the run that made them
        collections.deque(itertools.islice(clips, done * self.config.batch_size), maxlen=0)
        return SlotClips(clips, worker, workers, role, done)

    @property
    def recycles_outputs(self) -> bool:
        """Whether its workers can write batches into memory the loader lends back (`recycle`): the CPU path's."""
        return self.config.augment == "cpu"

    def _make_batch(self, batch: list[Clip], index: int, pool: OutputPool | None) -> Any:
        """The batch of `batch`'s clips; `index`: its place among the rank's batches of the epoch."""
        # each batch's augmentation draws follow from its place in the epoch, so a resumed epoch draws
        # exactly what an uninterrupted one does
        rng = np.random.default_rng([self.config.clip.seed, self.epoch, self.rank, index])
        return self._raw(batch) if self.config.augment == "gpu" else self._augment(batch, rng, pool)

    def _augment(self, batch: list[Clip], rng: np.random.Generator, pool: OutputPool | None = None) -> ClipBatch:
        """Decode and multi-crop, each clip decoded just before its crops; a clip with a frame that does
        not decode is counted, and its place in the batch goes to another clip of the batch (with new
        crops), so batches keep their size. The views go into a set of `pool`'s where one is free."""
        try:
            from wtours.clips.augment_cpu import multicrop_jpegs, output_shapes
        except ImportError as exc:  # OpenCV (its decoder and colour kernels) is missing or too old
            raise WtoursError(f"the CPU augmentation cannot load: {exc}", OPENCV_HINT) from exc
        outputs, cell = None, None
        if pool is not None:
            outputs, cell = pool.take(output_shapes(len(batch), self.config.clip.frames, self.config.multicrop))
        result = multicrop_jpegs([clip.jpgs for clip in batch], rng, self.config.multicrop, outputs)
        for i, error in result.failures:
            self.problems.clip_failed(batch[i].key, batch[i].url, error)
        if not result.sources:
            raise no_clip_decodes(f"{batch[0].key} in {shown(batch[0].url)}")
        return ClipBatch(result.views, [batch[i].key for i in result.sources],
                         lease=pool.lend(cell) if pool is not None else None)

    def _raw(self, batch: list[Clip]) -> RawClipBatch:
        jpgs = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for clip in batch for j in clip.jpgs]
        sizes = np.array([[c.meta[0]["height"], c.meta[0]["width"]] for c in batch])
        return RawClipBatch(jpgs, sizes, [c.key for c in batch], self.config.clip.frames)


def no_clip_decodes(first: str) -> WtoursError:
    return WtoursError(f"no clip of a batch decodes (first: {first})",
                       "the shard's JPEGs are damaged: re-make it with wtours shard, or leave it out of the SPEC")


class GpuAugmenter:
    """Decodes a RawClipBatch's JPEGs on the device (nvJPEG) and applies the multi-crop there."""

    def __init__(self, config: MultiCropConfig, device: torch.device | str, seed: int = 0):
        self.config, self.device = config, torch.device(device)
        self.rng = np.random.default_rng(seed)

    def reseed(self, *seed: int) -> None:
        self.rng = np.random.default_rng(np.random.SeedSequence(list(seed)))

    def __call__(self, batch: RawClipBatch) -> ClipBatch:
        decoded, rows = self._decoded(batch)  # list of (3, h, w) uint8
        sizes = batch.sizes[rows]
        height, width = int(sizes[:, 0].max()), int(sizes[:, 1].max())
        frames = torch.zeros(len(decoded), 3, height, width, dtype=torch.uint8, device=self.device)
        for i, image in enumerate(decoded):  # frames of different videos may differ in size
            frames[i, :, : image.shape[1], : image.shape[2]] = image.to(self.device)
        if self.device.type != "cpu":
            frames = frames.float()  # antialiased resizes on CUDA take float
        problems = dict(batch.problems or Problems().counts())
        problems["bad_clips"] += len(batch.keys) - len(set(rows))
        return ClipBatch(multicrop_tensor(frames, sizes, batch.frames, self.rng, self.config),
                         [batch.keys[i] for i in rows], problems)

    def _decoded(self, batch: RawClipBatch) -> tuple[list[torch.Tensor], list[int]]:
        """The frames, clip-major, and the clip of each row. A clip with a frame that does not decode is
        counted (the caller adds it to the batch's problems) and its row goes to the first clips that
        do, as on the CPU path: the frames that reach a decoder passed the same check (`jpeg_check`)."""
        from torchvision.io import decode_jpeg

        device, t = (self.device if self.device.type == "cuda" else "cpu"), batch.frames
        try:
            return decode_jpeg(batch.jpgs, device=device), list(range(len(batch.keys)))
        except RuntimeError:
            decoded: dict[int, list[torch.Tensor]] = {}
            for i, key in enumerate(batch.keys):  # which clips fail
                try:
                    decoded[i] = decode_jpeg(batch.jpgs[i * t:(i + 1) * t], device=device)
                except RuntimeError as error:
                    log.warning("skipping a clip with a frame that does not decode (%s: %s)", key,
                                str(error).splitlines()[-1])
        if not decoded:
            raise no_clip_decodes(batch.keys[0])
        rows = [*decoded, *(list(decoded)[r % len(decoded)] for r in range(len(batch.keys) - len(decoded)))]
        return [frame for i in rows for frame in decoded[i]], rows


class ClipLoader(DataLoader):
    """The DataLoader of a ClipDataset. A worker counts what it skips in its own copy of the dataset; the
    counts travel with each batch (`batch.problems`: since its previous batch) and are added to this
    process's `dataset.problems` as batches arrive (with workers=0 the dataset counts here). A shard
    skipped after a worker's last batch is not counted (the quota stops reading once that batch is full).
    Each iteration's CPU-path workers get a fresh `recycle.Leases`: a batch's output set is reused once
    this process holds nothing of it (`recycle` has the protocol)."""

    dataset: ClipDataset
    reuse_outputs = True  # make_loader's switch

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        if not self.num_workers:
            return super().__iter__()
        reuse = self.reuse_outputs and self.dataset.recycles_outputs
        leases = Leases(self.num_workers) if reuse else None
        self.dataset.leases = leases  # before super().__iter__() starts the workers, which copy the dataset
        with opencv_serial():
            try:
                batches = super().__iter__()
            finally:
                self.dataset.leases = None  # the workers have their copy; no later loader may share the table
        return self._delivered(batches, leases)

    def _delivered(self, batches: Iterator[Any], leases: Leases | None) -> Iterator[Any]:
        try:
            while True:
                if leases is not None:
                    leases.sweep()  # the consumer is asking for a batch: earlier ones it dropped are free
                batch = next(batches, None)
                if batch is None:
                    return
                if isinstance(batch, WtoursError):  # a worker's (ClipDataset.__iter__)
                    raise batch
                self.dataset.problems.add(batch.problems)
                if leases is not None:
                    leases.track(batch.lease, batch.lease_refs or storage_refs(batch))
                yield batch
                del batch  # this generator holds no batch while the consumer works
        finally:
            if leases is not None:
                leases.close()  # a worker waiting for a set gives up before `batches`' shutdown joins it


@contextlib.contextmanager
def opencv_serial() -> Iterator[None]:
    """OpenCV without its thread pool while DataLoader workers are forked. A worker sets OpenCV to one
    thread (`augment_cpu`), and a forked child doing that hangs for good where the parent had used the
    pool (any parallel kernel, e.g. a blur of a large image): the child's pool waits for threads that
    were not copied. Restored afterwards; nothing to do where OpenCV is not loaded."""
    cv2 = sys.modules.get("cv2")
    if cv2 is None:
        yield
        return
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


def _choose_jpeg_decoder() -> None:
    """The JPEG decoder is chosen here first (`jpeg.window_decoder`), so that its note on whole-frame decoding
    comes once, not from each worker; a missing OpenCV is reported where the workers need it (`_augment`)."""
    try:
        from wtours.clips.jpeg import window_decoder
    except ImportError:
        return
    window_decoder()


def make_loader(dataset: ClipDataset, pin_memory: bool = False, reuse_outputs: bool = True,
                loader_class: type[ClipLoader] = ClipLoader) -> ClipLoader:
    """The DataLoader of `dataset`. With `reuse_outputs` (the default) CPU-path workers refill the memory
    of batches this process has dropped (`recycle`); turn it off where views of a batch are handed to
    another process without a copy (that process's references are not seen). `loader_class`: a subclass
    of ClipLoader to make instead (`datamodule.EpochLoader`)."""
    workers = dataset.config.workers
    if dataset.config.augment == "cpu":
        _choose_jpeg_decoder()
    loader = loader_class(dataset, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                        prefetch_factor=2 if workers else None, persistent_workers=False,
                        worker_init_fn=stop.leave_to_parent)
    loader.reuse_outputs = reuse_outputs
    return loader
