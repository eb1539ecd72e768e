"""Output buffers that DataLoader workers reuse once the training process has let go of them.

A CPU-path worker writes each batch's uint8 views into shared memory, so sending them copies nothing.
A fresh shared segment costs far more than the writes into it (the kernel zero-fills the pages torch
reserves with posix_fallocate, and each faults on first write): at 8 clips per batch (24 MB of views),
22-25 ms per batch on the team's 2-core VM against 2 ms into a reused buffer, about 2.7 ms of a
worker's 33 ms per clip (docs/benchmarks.md). A buffer is reused only once no tensor of the training
process shares its memory. The protocol between the loader (in the training process) and its workers:

- Before its workers start, the loader makes `Leases`: a table in shared memory with a row per worker
  and a cell per reusable output set (`SETS_PER_WORKER`), all 0 (free).
- A worker's `OutputPool` fills its lowest free set (made on first use), writes the batch's serial into
  the set's cell just before sending the batch (`Lease` travels with it), and leaves the set alone while
  the cell is not 0. With every set out it allocates fresh shared memory, as without a pool; where
  /dev/shm is full, it waits for one of its sets to be freed.
- The loader keeps weak references to the storages of each batch it delivers (`Leases.track`) and, each
  time the consumer asks for a batch (`Leases.sweep`), frees the cell of every batch whose storages no
  tensor, view, numpy array or pinned copy in progress of this process holds: a consumer that keeps
  any part of a batch keeps its set out of the pool.

Only the loader clears cells, and only one still holding the serial it recorded. It cannot see another
process holding a view: hand views to other processes as copies (`.clone()`), or turn reuse off
(`make_loader(..., reuse_outputs=False)`)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch.multiprocessing.reductions import StorageWeakRef

from wtours.errors import WtoursError

__all__ = ["Lease", "Leases", "OutputPool", "SETS_PER_WORKER", "SharedMemoryFull", "StorageWeakRef",
           "shared_empty", "storage_refs"]

# Sets a worker may keep: with one worker and prefetch_factor 2, the batch being filled, two waiting in
# the queue, the one the consumer holds and the previous one (still bound to the consumer's loop
# variable when the next is asked for) are five; one more covers a pin-memory thread's copy.
SETS_PER_WORKER = 6


class SharedMemoryFull(WtoursError):
    """No room left in shared memory (/dev/shm) for a batch's views."""


def shared_empty(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor in shared memory, as torch's default_collate allocates a worker's
    batches: a tensor in private memory would be copied into shared memory when the worker sends it.
    Raises SharedMemoryFull where /dev/shm has no room (torch reserves the pages up front)."""
    elem = torch.empty(0, dtype=torch.uint8)
    try:
        storage = elem._typed_storage()._new_shared(math.prod(shape), device=elem.device)
    except RuntimeError as error:
        if "shared memory" not in str(error):
            raise
        raise SharedMemoryFull(
            f"no room in shared memory for a batch's views ({math.prod(shape) / 2**20:.1f} MB more): {error}",
            "DataLoader workers hand batches over in /dev/shm (each keeps up to "
            f"{SETS_PER_WORKER} batches there): give it more room (docker run --shm-size=8g; on Kubernetes, "
            "an emptyDir volume with medium: Memory mounted at /dev/shm), or lower --batch-size or --workers; "
            "df -h /dev/shm shows its size") from None
    return elem.new(storage).resize_(shape)


def storage_refs(tensors: list[torch.Tensor]) -> list[StorageWeakRef]:
    """Weak references to the tensors' storages: expired once nothing in this process uses them."""
    return [StorageWeakRef(t.untyped_storage()) for t in tensors]


@dataclass(frozen=True)
class Lease:
    """Which pooled set a batch's views occupy: the worker, the set's cell, and the batch's serial."""

    worker: int
    cell: int
    serial: int


class Leases:
    """The loader's side: the shared table of cells, and the batches delivered but not yet released."""

    def __init__(self, workers: int, sets: int = SETS_PER_WORKER) -> None:
        self.cells = torch.zeros((workers, sets), dtype=torch.int64).share_memory_()  # 0: free, else a serial
        self.closed = torch.zeros(1, dtype=torch.int64).share_memory_()  # 1: the loader stopped; waiters give up
        self._out: list[tuple[Lease, list[StorageWeakRef]]] = []

    def track(self, lease: Lease | None, refs: list[StorageWeakRef]) -> None:
        """Remember a delivered batch's set until the storages of `refs` (`storage_refs` of the views the
        worker filled) are all freed."""
        if lease is not None:
            self._out.append((lease, refs))

    def sweep(self) -> None:
        """Free the cells of delivered batches that this process no longer holds."""
        still_out = []
        for lease, refs in self._out:
            if not all(ref.expired() for ref in refs):
                still_out.append((lease, refs))
            elif int(self.cells[lease.worker, lease.cell]) == lease.serial:
                self.cells[lease.worker, lease.cell] = 0
        self._out = still_out

    def close(self) -> None:
        """The loader is done (exhausted, broken out of, or failed): a worker waiting for a set gives up, so
        the DataLoader's shutdown joins it at once instead of terminating it after 5 s."""
        self.closed[0] = 1


class OutputPool:
    """A worker's side: output sets to fill, reused once the loader has freed their cells."""

    def __init__(self, leases: Leases, worker: int, wait_seconds: float = 60.0) -> None:
        self.cells, self.worker, self.wait_seconds = leases.cells[worker], worker, wait_seconds
        self.closed = leases.closed
        self.sets: dict[int, list[torch.Tensor]] = {}
        self.serial = 0

    def take(self, shapes: list[tuple[int, ...]]) -> tuple[list[torch.Tensor], int | None]:
        """Tensors of `shapes` to fill, and their cell (None: fresh memory, outside the pool). The cell
        stays free until `lend` (a batch that fails is never sent, and its set is taken again).

        Where shared memory is full (a container's small /dev/shm), it waits up to `wait_seconds` for
        the loader to free a set the worker already has, so the loader runs with the sets that fit."""
        free = [cell for cell in range(len(self.cells)) if int(self.cells[cell]) == 0]
        if fitting := [cell for cell in free if self._fits(cell, shapes)]:
            return self.sets[fitting[0]], fitting[0]
        try:
            if not free:
                return [shared_empty(shape) for shape in shapes], None
            self.sets.pop(free[0], None)  # a set of other shapes gives its memory back first
            self.sets[free[0]] = [shared_empty(shape) for shape in shapes]
            return self.sets[free[0]], free[0]
        except SharedMemoryFull:
            freed = self._wait_for_a_set(shapes)
            if freed is None:
                raise
            return self.sets[freed], freed

    def _fits(self, cell: int, shapes: list[tuple[int, ...]]) -> bool:
        return cell in self.sets and [tuple(t.shape) for t in self.sets[cell]] == shapes

    def _wait_for_a_set(self, shapes: list[tuple[int, ...]]) -> int | None:
        """The cell of one of this worker's sets of `shapes` once the loader frees it; None if it has fewer
        than two, or none is freed within `wait_seconds` or before the loader stops."""
        mine = [cell for cell in self.sets if self._fits(cell, shapes)]
        if len(mine) < 2:
            return None  # its only set is the consumer's loop variable, freed only once this batch arrives
        deadline = time.monotonic() + self.wait_seconds
        while time.monotonic() < deadline and not int(self.closed[0]):
            for cell in mine:
                if int(self.cells[cell]) == 0:
                    return cell
            time.sleep(0.002)
        return None

    def lend(self, cell: int | None) -> Lease | None:
        """Mark `cell`'s set as sent: the worker leaves it alone until the loader frees the cell."""
        if cell is None:
            return None
        self.serial += 1
        self.cells[cell] = self.serial
        return Lease(self.worker, cell, self.serial)
