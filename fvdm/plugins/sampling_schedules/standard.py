"""Standard (full-sequence) schedule: every generated frame shares the level, S[k, f] = s_k."""

from __future__ import annotations

import torch

from fvdm.plugins.sampling_schedules.base import MatrixSchedule


class StandardSchedule(MatrixSchedule):
    """All frames share one level per row: S[k, f] = s_k (Diffusion Forcing's full_sequence)."""

    def progress_matrix(self, num_steps: int, num_generated: int) -> torch.Tensor:
        m = torch.arange(num_steps + 1).unsqueeze(1)
        return (num_steps - m).expand(num_steps + 1, num_generated)
