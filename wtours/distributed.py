"""One process or many: rank, world size, device, and the process group. Many processes come from torchrun
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT set) or from SLURM's srun (SLURM_PROCID, SLURM_NTASKS,
SLURM_LOCALID, SLURM_NODELIST, SLURM_JOB_ID), as DINO's init_distributed_mode reads them: the rendezvous is
the node list's first host, on a port derived from the job id unless MASTER_PORT is set."""

from __future__ import annotations

import gc
import os
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist

from wtours.errors import UsageError, WtoursError
from wtours.system import first_host, resolve_device


@dataclass(frozen=True)
class Dist:
    """Where this process sits (read_launch: the launcher's environment) and the device it trains on
    (setup: --device checked; the CPU until then)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    # processes on this node that share one CPU affinity mask: srun binds each task's own, torchrun does not
    local_world_size: int = 1
    init_method: str = "env://"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def slurm_port(job_id: str) -> int:
    """A port per job, so two jobs sharing a node do not collide: 15000 + the job id's last 4 digits."""
    digits = "".join(ch for ch in job_id if ch.isdigit())
    return 15000 + int(digits[-4:] or 0)


def read_launch(env: Mapping[str, str] = os.environ) -> Dist:
    """torchrun's variables first (torchrun inside a SLURM job sets them), then srun's, else one process."""
    if "RANK" in env:
        return Dist(int(env["RANK"]), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")),
                    local_world_size=int(env.get("LOCAL_WORLD_SIZE", "1")))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env["SLURM_NODELIST"]
        addr = env.get("MASTER_ADDR") or first_host(nodelist)
        port = env.get("MASTER_PORT") or slurm_port(env.get("SLURM_JOB_ID", "0"))
        return Dist(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", "0")),
                    init_method=f"tcp://{addr}:{port}")
    return Dist()


def check_device(device: str | None, launch: Dist) -> torch.device:
    """The device this process trains on, or a WtoursError before anything starts: `--device` must
    name a device this machine has (cuda:N with N below the device count; under torchrun/srun each
    process takes cuda:LOCAL_RANK, which must exist too)."""
    target = resolve_device(device)
    if target.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: no MPS device here", "use --device cpu")
    if target.type in ("cpu", "mps"):
        return target
    if target.type != "cuda":
        raise UsageError(f"--device {device}: wtours trains on cpu or cuda only", "use --device cpu or cuda[:N]")
    count = torch.cuda.device_count()
    if launch.world_size > 1:  # one GPU per process on the node: cuda:LOCAL_RANK
        if launch.local_rank >= count:
            raise WtoursError(f"process {launch.local_rank} on this node needs cuda:{launch.local_rank}, but the "
                              f"node has {count} CUDA device(s)",
                              "start at most one process per GPU (torchrun --nproc-per-node, srun --ntasks-per-node)")
        return torch.device("cuda", launch.local_rank)
    index = target.index or 0
    if index >= count:
        raise UsageError(f"--device {device}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})",
                          f"pass --device cuda:N with N < {count}, or --device cpu")
    return torch.device("cuda", index)


@contextmanager
def setup(device: str | None = None) -> Iterator[Dist]:
    """Join the process group for the block when launched as many processes (nccl on GPUs, gloo on CPUs)."""
    launch = read_launch()
    target = check_device(device, launch)
    if target.type == "cuda":
        torch.cuda.set_device(target)
    if launch.world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if target.type == "cuda" else "gloo", init_method=launch.init_method,
                                rank=launch.rank, world_size=launch.world_size)
    try:
        yield replace(launch, device=target)
    except BaseException as e:
        # the frames the error left hold the run's DDP model: cleared, so that leave_group can free it
        traceback.clear_frames(e.__traceback__)
        raise
    finally:
        if dist.is_initialized():
            leave_group()


def leave_group() -> None:
    """Destroy the process group and free what still holds it, while Python is whole. A DDP model keeps the
    group's C++ object (and Gloo's threads) alive; left in a reference cycle, it used to be freed only at
    interpreter exit, where that destructor aborts the process (SIGABRT, "terminate called without an active
    exception": about 1 torchrun run in 3 of a DDP model in a cycle, seen here with torch 2.14.1 and Gloo)."""
    gc.collect()
    dist.destroy_process_group()
    gc.collect()


def agree(dist: Dist, work):
    """`work()` on rank 0 only; its result, or its failure (a WtoursError or an OSError such as a
    read-only folder), reaches every rank: rank 0 raises its own error, the others a copy, so a
    refusal on rank 0 never leaves the other ranks waiting in a collective."""
    result, error, failure = None, None, None
    if dist.is_main:
        try:
            result = work()
        except BaseException as e:  # anything (Ctrl-C, a damaged file's TypeError): the others must not wait
            failure = e
            error = ((e.message, e.hint, e.exit_code) if isinstance(e, WtoursError) else
                     (f"rank 0 could not prepare the run folder: {type(e).__name__}: {e}", "see rank 0's message",
                      WtoursError.exit_code))
    if dist.world_size > 1:
        box = [(result, error)]
        torch.distributed.broadcast_object_list(box, src=0)
        result, error = box[0]
    if failure is not None:
        raise failure
    if error is not None:
        raise WtoursError(*error[:2], exit_code=error[2])
    return result


def all_gather(obj) -> list:
    """Every rank's `obj` (a small picklable value), on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, obj)
    return parts


def max_over_ranks(value: int, device: torch.device) -> int:
    """The largest of every rank's `value` (a collective: every rank calls it at the same step)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    tensor = torch.tensor([value], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())
