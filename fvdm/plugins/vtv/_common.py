"""Argument checks and seeded draws shared by the VTV strategies."""

from __future__ import annotations

import torch


def check_size(batch_size: int, num_frames: int) -> None:
    for name, v in (("batch_size", batch_size), ("num_frames", num_frames)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def rand(*shape: int, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    """U[0, 1) float32 of ``shape`` drawn from ``generator`` only, then moved to ``device``.

    Drawing on the generator's own device keeps a CPU generator usable for CUDA
    batches and makes the numbers independent of the target device.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(*shape, generator=generator, device=gen_device, dtype=torch.float32).to(device)
