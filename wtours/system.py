"""What this process may use of the machine: CPUs (affinity, SLURM's allocation), the torch device and
SLURM's layout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import TYPE_CHECKING

from wtours.errors import UsageError, WtoursError

if TYPE_CHECKING:
    import torch


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (what taskset, cgroups' cpusets and
    srun bind), capped by SLURM_CPUS_PER_TASK when set; never the node's whole core count."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity call
        cpus = os.cpu_count() or 1
    per_task = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if per_task.isdigit() and int(per_task) > 0:
        cpus = min(cpus, int(per_task))
    return max(1, cpus)


def default_workers(local_processes: int = 1) -> int:
    """Data-loader processes for one training process: the usable CPUs shared among the training
    processes of this node that share one affinity mask (torchrun's; srun gives each task its own)."""
    return max(1, usable_cpus() // max(1, local_processes))


def resolve_device(name: str | None) -> torch.device:
    """`--device`: None or "auto" is cuda when torch sees a CUDA device, else cpu; a cuda device named where there is
    none is a UsageError. (torch is imported here: --help and the CPU-only commands do not load it.)"""
    import torch

    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name}: not a device name", "use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is available here",
                         "use --device cpu, or leave --device out (cuda when available, else cpu); for CUDA "
                         "install a CUDA build of torch on a machine with a GPU")
    return device


# ---------------------------------------------------------------- SLURM node lists

# Brackets that close, never nest and never stand alone: 'a[1-2]b[3]', not 'a[1', 'a]' or 'a[[1]]'.
_BRACKETS = re.compile(r"[^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*")


def expand_nodelist(nodelist: str) -> list[str]:
    """SLURM's compressed host list, expanded as `scontrol show hostnames` does:
    'node[01-03,07]' -> node01 node02 node03 node07; 'gpu-a[1-2],gpu-b5' -> gpu-a1 gpu-a2 gpu-b5;
    'r[1-2]-n[1-2]' -> r1-n1 r1-n2 r2-n1 r2-n2 (zero padding kept)."""
    text = nodelist.strip()
    if not _BRACKETS.fullmatch(text):
        raise ValueError(f"unbalanced brackets in {text!r}")
    hosts: list[str] = []
    for group in re.split(r",(?![^\[]*\])", text):  # at the commas outside brackets
        names = [""] if group else []
        for i, part in enumerate(re.split(r"\[([^\]]*)\]", group)):  # text, ranges, text, ..., text
            names = [name + item for name in names for item in (_expand_ranges(part) if i % 2 else [part])]
        hosts += names
    if not hosts:
        raise ValueError(f"empty node list {nodelist!r}")
    return hosts


def _expand_ranges(ranges: str) -> list[str]:
    out = []
    for part in ranges.split(","):
        low, sep, high = part.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError(f"bad range {part!r}")
        width = len(low)  # node[01-10]: zero padding to the lower bound's width
        out += [str(i).zfill(width) for i in range(int(low), int(high or low) + 1)]
    return out


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list; `scontrol show hostnames` only if our parser fails."""
    try:
        return expand_nodelist(nodelist)[0]
    except ValueError as e:
        if shutil.which("scontrol"):
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.split():
                return out.stdout.split()[0]
        raise WtoursError(f"cannot read SLURM_NODELIST {nodelist!r} ({e})",
                          "set MASTER_ADDR to the first node's host name") from e
