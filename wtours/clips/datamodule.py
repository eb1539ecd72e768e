"""A Lightning DataModule of `Clips` (the `lightning` extra): each rank's clips, epoch by epoch, resumable."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

try:
    from lightning.pytorch import LightningDataModule
except ImportError as exc:  # the extra is not installed
    from wtours.errors import WtoursError

    raise WtoursError(f"ClipDataModule needs Lightning: {exc}", "pip install 'wtours[lightning]'") from exc

from wtours.clips.dataset import Clips
from wtours.clips.pipeline import ClipLoader, make_loader
from wtours.clips.spec import ShardRef


class ClipDataModule(LightningDataModule):
    """`Clips(shards, frames, stride, **options)` for a Trainer: built in `setup` for the trainer's rank and
    world size, and each pass of its train loader is the trainer's current epoch, resumed past the batches a
    restored checkpoint had done in it (`Clips.set_epoch(epoch, skip_batches)`). `options`: Clips' keyword
    arguments (output, transform, batch_size, workers, ...), without rank and world_size."""

    def __init__(self, shards: str | Sequence[str] | Sequence[ShardRef], frames: int = 8, stride: float = 1.0,
                 root: str | os.PathLike | None = None, **options: Any):
        super().__init__()
        self.shards, self.frames, self.stride, self.root, self.options = shards, frames, stride, root, options
        self.clips: Clips | None = None

    def setup(self, stage: str) -> None:
        if self.clips is None:
            rank, world_size = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
            self.clips = Clips(self.shards, self.frames, self.stride, root=self.root, rank=rank,
                               world_size=world_size, **self.options)

    def train_dataloader(self) -> ClipLoader:
        if self.clips is None:
            self.setup("fit")
        assert self.clips is not None
        loader = make_loader(self.clips, reuse_outputs=False, loader_class=EpochLoader)
        assert isinstance(loader, EpochLoader)
        loader.position = self._position
        return loader

    def _position(self) -> tuple[int, int]:
        """(epoch, batches of it already done) from the trainer's progress: after a checkpoint restored from
        the middle of an epoch, the batches it had started; from the end of one, none of the next."""
        if self.trainer is None or self.clips is None:
            return 0, 0
        epoch, done = self.trainer.current_epoch, self.trainer.fit_loop.epoch_loop.batch_progress.current.ready
        return (epoch + 1, 0) if done >= self._epoch_batches() else (epoch, done)

    def _epoch_batches(self) -> int:
        """The batches the trainer takes per epoch: the loader's, or fewer under `limit_train_batches`."""
        assert self.trainer is not None and self.clips is not None
        limit = self.trainer.limit_train_batches
        if isinstance(limit, float):  # a fraction (1.0: all)
            return int(len(self.clips) * limit)
        return len(self.clips) if limit is None else min(len(self.clips), limit)


class EpochLoader(ClipLoader):
    """A ClipLoader that sets its dataset's epoch (and resume position) from `position()` each time it is
    iterated: Lightning asks a DataLoader's sampler, not its dataset, to set the epoch."""

    position: Callable[[], tuple[int, int]]  # (epoch, batches of it already done); set by ClipDataModule

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        epoch, done = self.position()
        self.dataset.set_epoch(epoch, skip_batches=done)
        return super().__iter__()

