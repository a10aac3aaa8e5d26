"""torch.distributed for runs launched by ``torchrun`` (no home-made launcher): process group,
collectives, DDP / FSDP2 wrapping and full-state gathering for checkpoints.

``torchrun --nproc-per-node N -m fvdm train CONFIG`` sets RANK / WORLD_SIZE /
LOCAL_RANK / MASTER_ADDR / MASTER_PORT; :func:`init_distributed` reads them and
starts one process group (nccl on GPU, gloo on CPU). A plain ``fvdm train`` has
no WORLD_SIZE and runs as a single process without any process group.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable

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


def gather_objects(obj: object, info: DistInfo) -> list[object]:
    """Every rank's ``obj``, in rank order (``[obj]`` on a single process)."""
    if not info.distributed:
        return [obj]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


# -- model state under DDP / FSDP2 -------------------------------------------------------------------

def shard_fsdp2(model: torch.nn.Module) -> None:
    """Shard ``model`` in place with FSDP2: the sub-modules of each transformer block, then the rest.

    The blocks are the ModuleLists directly under the backbone, or under the diffusers model it wraps
    (``model.transformer.blocks`` for the Wan family).
    """
    from torch.distributed.fsdp import fully_shard

    holders = [model] + ([model.transformer] if isinstance(getattr(model, "transformer", None), torch.nn.Module)
                         else [])
    # Not the block itself: backbones may call a block's adaLN layer outside the block's forward
    # (fvdm's Wan blocks run their modulation glue outside the diffusers block's forward), which would
    # skip FSDP's unshard hook; the block's own parameters (scale_shift_table) stay with the root.
    for mlist in (m for h in holders for m in h.children() if isinstance(m, torch.nn.ModuleList)):
        for block in mlist:
            for child in block.children():
                if any(True for _ in child.parameters()):
                    fully_shard(child)
    fully_shard(model)


def wrap_model(raw: torch.nn.Module, info: DistInfo, *, compiled: bool, fsdp: bool) -> torch.nn.Module:
    """The module the train step calls: ``raw``, compiled if asked, in DDP when several ranks run
    without FSDP2 (FSDP2 shards ``raw`` in place, see :func:`shard_fsdp2`)."""
    model: torch.nn.Module = torch.compile(raw) if compiled else raw
    if info.distributed and not fsdp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    return model


def grad_sync(model: torch.nn.Module, raw: torch.nn.Module, fsdp: bool, sync: bool) -> Any:
    """Context for one micro-step's backward: gradients are all-reduced over ranks only when ``sync``
    (the last micro-step of an optimizer step), so accumulation costs one reduction per step."""
    if fsdp:
        raw.set_requires_gradient_sync(sync)
    if isinstance(model, torch.nn.parallel.DistributedDataParallel) and not sync:
        return model.no_sync()
    return contextlib.nullcontext()


def full_state(raw: torch.nn.Module, opt: torch.optim.Optimizer | None, fsdp: bool) -> tuple[dict, dict | None]:
    """Full (unsharded, CPU-loadable) model and optimizer state dicts; collective under FSDP2."""
    if not fsdp:
        return raw.state_dict(), (opt.state_dict() if opt is not None else None)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    o = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd = get_model_state_dict(raw, options=o)
    opt_sd = get_optimizer_state_dict(raw, opt, options=o) if opt is not None else None
    return model_sd, opt_sd


def load_full_state(raw: torch.nn.Module, opt: torch.optim.Optimizer | None, model_sd: dict, opt_sd: dict | None,
                    fsdp: bool, load_strict: Callable[[torch.nn.Module, dict], None], *, partial: bool = False) -> None:
    """Load full state dicts into a plain or FSDP2-sharded model (and optimizer).

    ``load_strict(module, state)`` loads an unsharded model with errors naming the mismatch.
    ``partial``: ``model_sd`` holds only some of the weights (LoRA adapters; ``load_strict`` checks those).
    """
    if not fsdp:
        load_strict(raw, model_sd)
        if opt is not None and opt_sd is not None:
            opt.load_state_dict(opt_sd)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    o = StateDictOptions(full_state_dict=True, strict=not partial)
    set_model_state_dict(raw, model_sd, options=o)
    if opt is not None and opt_sd is not None:
        set_optimizer_state_dict(raw, opt, opt_sd, options=o)
