"""Pyramid schedule (Diffusion Forcing): later frames start later; ``block_pyramid``: by blocks of frames.

``pyramid``: ``M[m, j] = clip(K + floor(j·u) - m, 0, K)`` over the generated frames j = 0..G-1
(context frames are skipped, so the first unknown frame starts at once); rows
m = 0 .. K + floor((G-1)·u). ``u = 0`` is the standard schedule.

``block_pyramid``: the same over blocks, b(j) = j // block: ``M[m, j] = clip(K + floor(b(j)·u) - m,
0, K)``, so the frames of a block share their level. SkyReels-V2's asynchronous diffusion forcing
(``SkyReelsV2DiffusionForcingPipeline``: ``ar_step`` = u, ``causal_block_size`` = block) is this
matrix (tests/test_wan_pipeline_oracle.py); ``block = 1`` is ``pyramid``.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from fvdm.plugins.sampling_schedules.base import MatrixSchedule, MatrixScheduleConfig, pyramid_progress


def block_offsets(num_generated: int, u: float, block: int = 1) -> torch.Tensor:
    """(G,) start delays floor((j // block)·u) of the generated frames, in rows."""
    return torch.tensor([math.floor(j // block * u + 1e-9) for j in range(num_generated)])


class PyramidConfig(MatrixScheduleConfig):
    u: float = Field(1.0, ge=0, description="uncertainty scale: frame j starts floor(j*u) rows after frame 0")


class PyramidSchedule(MatrixSchedule):
    """Diffusion Forcing pyramid(u): M[m, j] = clip(K + floor(j*u) - m, 0, K)."""

    Config = PyramidConfig

    def progress_matrix(self, num_steps: int, num_generated: int) -> torch.Tensor:
        return pyramid_progress(num_steps, block_offsets(num_generated, self.cfg.u))


class BlockPyramidConfig(MatrixScheduleConfig):
    u: float = Field(1.0, ge=0, description="block b starts floor(b*u) rows after block 0 (SkyReels-V2 ar_step)")
    block: int = Field(1, ge=1, description="frames per block, one level per block (SkyReels-V2 causal_block_size)")


class BlockPyramidSchedule(MatrixSchedule):
    """Pyramid over blocks of frames: M[m, j] = clip(K + floor((j // block)*u) - m, 0, K)."""

    Config = BlockPyramidConfig

    def progress_matrix(self, num_steps: int, num_generated: int) -> torch.Tensor:
        return pyramid_progress(num_steps, block_offsets(num_generated, self.cfg.u, self.cfg.block))
