"""Small torch.distributed helpers for runs launched by ``torchrun`` (no home-made launcher).

``torchrun --nproc-per-node N -m fvdm train CONFIG`` sets RANK / WORLD_SIZE /
LOCAL_RANK / MASTER_ADDR / MASTER_PORT; :func:`init_distributed` reads them and
starts one process group (nccl on GPU, gloo on CPU). A plain ``fvdm train`` has
no WORLD_SIZE and runs as a single process without any process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False  # we started the process group, so we tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _pick_device(device: str | torch.device | None, local_rank: int) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def init_distributed(device: str | torch.device | None = None) -> DistInfo:
    """Start the process group from torchrun's environment (if any) and pick the device.

    ``device``: ``None``/``"auto"`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else CPU.
    Backend: nccl for CUDA, gloo for CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size <= 1:
        return DistInfo(0, 1, 0, dev, False)
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, False)
    if "MASTER_ADDR" not in os.environ:
        raise RuntimeError(
            f"WORLD_SIZE={world_size} but MASTER_ADDR is not set: launch multi-process runs with "
            "`torchrun --nproc-per-node N -m fvdm train ...`"
        )
    backend = "nccl" if dev.type == "cuda" else "gloo"
    kwargs = {"device_id": dev} if dev.type == "cuda" else {}
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size, **kwargs)
    return DistInfo(rank, world_size, local_rank, dev, True)


def cleanup(info: DistInfo) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``t`` over ranks (a copy; identity on a single process)."""
    if not info.distributed:
        return t.clone()
    out = t.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``t`` over ranks (a copy; identity on a single process)."""
    out = t.clone()
    if info.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def broadcast_object(obj: object, info: DistInfo, src: int = 0) -> object:
    """Send a picklable object from ``src`` to every rank (used for errors decided on rank 0)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
