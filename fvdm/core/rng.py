"""The training engine's random streams: one generator per kind of randomness.

t (the VTV strategy's draws), noise and label dropout each come from their own
``torch.Generator``, seeded from (run seed, stream name) and advanced identically on
every rank (each rank draws the whole global batch and keeps its rows). Separate
streams make seeds *paired* across strategies: a VTV strategy that draws more (ptss:
coins + shared + per-frame levels) does not shift the noise or the label dropout.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from fvdm.core.errors import warn_once

#: The streams, in checkpoint order.
RNG_STREAMS = ("t", "noise", "label")


def stream_seed(seed: int, name: str) -> int:
    """A 63-bit seed for stream ``name`` of run seed ``seed``: stable across runs, processes and machines."""
    digest = hashlib.sha256(f"fvdm/{int(seed)}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def rng_streams(seed: int, device: str | torch.device = "cpu") -> dict[str, torch.Generator]:
    """{"t", "noise", "label"} -> a generator on ``device`` seeded from (seed, name); same on every rank."""
    return {name: torch.Generator(device=device).manual_seed(stream_seed(seed, name)) for name in RNG_STREAMS}


def stream_states(gens: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """The generators' states as CPU tensors, for a checkpoint."""
    return {name: g.get_state().cpu() for name, g in gens.items()}


def restore_streams(saved: Any, seed: int, step: int, device: str | torch.device) -> dict[str, torch.Generator]:
    """Generators continuing exactly where a checkpoint's ``saved`` states left off.

    A checkpoint from before the separate streams holds one shared state: the streams are
    then reseeded from (seed, step), which continues correctly but not bit-identically.
    """
    gens = rng_streams(seed, device)
    if isinstance(saved, dict) and set(saved) == set(RNG_STREAMS):
        for name, g in gens.items():
            g.set_state(saved[name].to("cpu"))
        return gens
    warn_once("rng_streams", "checkpoint predates the separate t/noise/label generators: they are reseeded from "
                             "(seed, step), so the run is not bit-identical to an uninterrupted one")
    return rng_streams(seed * 1_000_003 + step, device)
