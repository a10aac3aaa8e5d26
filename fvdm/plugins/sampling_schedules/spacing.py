"""Timestep spacing: the K+1 levels ``s_0 > ... > s_K = 0`` one frame walks through.

Levels are floats in [0, 1] (0 = clean). ``s_K = 0`` is always exactly clean: the
last step of every frame lands on the data (DDIM's ``set_alpha_to_one``).

- ``uniform``  : s_k = 1 - k/K (starts from pure noise).
- ``leading``  : diffusers "leading" as DDIMScheduler / DDPMScheduler define it, on a grid of T
                 integer steps: n_k = (K-1-k)·(T // K) + steps_offset for k < K, s_k = n_k / (T-1)
                 (T=1000, K=5, offset 1: 801, 601, 401, 201, 1).
- ``leading_multistep`` : diffusers "leading" as DPMSolverMultistepScheduler and
                 UniPCMultistepScheduler define it: n_k = (K-k)·(T // (K+1)) + steps_offset
                 (T=1000, K=5, offset 1: 831, 665, 499, 333, 167). Those schedulers default to
                 steps_offset 0; pass it to match them.
- ``trailing`` : diffusers "trailing": n_k = round(T - k·T/K) - 1 for k < K.
- ``flow``     : diffusers' flow-sigma grid (UniPC / DPM-Solver with ``use_flow_sigmas``, the Wan
                 pipelines' scheduler): s_k = 1 - k·(1 - 1/T)/K for k < K, i.e. K points from 1 down
                 to (not including) 1/T. After the shift, a first level within 1e-6 of 1 is lowered
                 to 1 - 1e-6, as diffusers does (so log(alpha) stays finite at the first step).
- ``shift``    : the rectified-flow timestep shift (SD3 / Pusa / Wan's ``flow_shift``), applied last:
                 s -> shift·s / (1 + (shift-1)·s); shift = 1 is the identity. It is monotone and
                 keeps 0 at 0, so every column of a matrix built from these levels stays
                 non-increasing and context columns stay 0.

Continuous schedules (rectified flow) have no T; the grid spacings then use a 1000-step grid.
"""

from __future__ import annotations

import torch

SPACINGS = ("uniform", "leading", "leading_multistep", "trailing", "flow")
#: diffusers lowers a first flow sigma of 1 by this much (UniPC/DPM ``use_flow_sigmas``)
FLOW_FIRST_EPS = 1e-6
DEFAULT_GRID = 1000


def spacing_levels(
    num_steps: int, *, spacing: str = "uniform", num_timesteps: int | None = None,
    shift: float = 1.0, steps_offset: int = 1,
) -> torch.Tensor:
    """The K+1 levels (float64, decreasing, last exactly 0) for K = ``num_steps``."""
    k_steps = int(num_steps)
    if k_steps < 1:
        raise ValueError(f"num_steps must be >= 1 (got {num_steps}); use e.g. --steps 50")
    if shift <= 0:
        raise ValueError(f"shift must be > 0 (got {shift}); 1.0 disables the flow timestep shift")
    grid = int(num_timesteps or DEFAULT_GRID)
    k = torch.arange(k_steps + 1, dtype=torch.float64)
    if spacing == "uniform":
        s = 1.0 - k / k_steps
    elif spacing == "flow":
        s = torch.cat([1.0 - k[:-1] * (1.0 - 1.0 / grid) / k_steps, torch.zeros(1, dtype=torch.float64)])
    elif spacing in ("leading", "leading_multistep", "trailing"):
        most = grid - 1 if spacing == "leading_multistep" else grid  # T // (K+1) must be >= 1
        if k_steps > most:
            raise ValueError(f"{spacing} spacing needs num_steps <= {most} on T={grid} (got {k_steps}); use 'uniform'")
        if spacing == "leading":
            n = (k_steps - 1 - k[:-1]) * (grid // k_steps) + steps_offset
        elif spacing == "leading_multistep":
            n = (k_steps - k[:-1]) * (grid // (k_steps + 1)) + steps_offset
        else:
            n = torch.round(grid - k[:-1] * grid / k_steps) - 1
        n = n.clamp(0, grid - 1)
        s = torch.cat([n / (grid - 1), torch.zeros(1, dtype=torch.float64)])
    else:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    if shift != 1.0:
        s = shift * s / (1.0 + (shift - 1.0) * s)
    if spacing == "flow" and abs(float(s[0]) - 1.0) < FLOW_FIRST_EPS:
        s[0] -= FLOW_FIRST_EPS
    s[-1] = 0.0
    if not bool((s[:-1] >= s[1:]).all()):
        raise ValueError(f"{spacing} spacing with K={k_steps}, T={grid} gives non-decreasing levels; use fewer steps")
    return s
