"""Per-frame history for multistep solvers (DPM-Solver++ 2M, UniPC): the explicit sampler state.

A multistep solver reuses the data predictions x0_hat of a frame's earlier levels. In FVDM
frames move at their own levels (pyramid, autoregressive, context held at 0), so the history
is kept per frame: a frame that waits in a row keeps its entries, and the next time it moves
its extrapolation uses *its own* previous levels, exactly as a one-frame diffusers run on that
frame's level sequence would.

Everything here is in the solver's half-log-SNR ``lambda = log(alpha) - log(sigma)``
(DPM-Solver's time variable), computed in float64 per frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from fvdm.core.interfaces import NoiseSchedule
from fvdm.core.sampling import alpha_sigma
from fvdm.core.tensor import append_dims

#: log(alpha) and log(sigma) are floored here, so a level with alpha = 0 (rectified flow at t = 1)
#: gives a very negative but finite lambda: its step is then exactly first order (exp(-h) = 0).
_LOG_FLOOR = 1e-30


def half_log_snr(schedule: NoiseSchedule, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(alpha, sigma, lambda) at per-frame levels t (B, F), each (B, F) float64 (from the schedule, VP or not).

    lambda is +inf at a clean level (sigma = 0); callers treat steps that end there apart.
    """
    a, s = alpha_sigma(schedule, t, 2, torch.float64)  # (B, F) each
    lam = torch.log(a.clamp_min(_LOG_FLOOR)) - torch.log(s)
    return a, s, lam


@dataclass(frozen=True)
class FrameHistory:
    """What a multistep solver remembers of each frame, newest first; every tensor indexed (B, F, ...).

    ``x0`` holds the last ``depth`` data predictions (B, F, C, H, W) and ``t`` the levels they were
    made at (B, F) float64 (1.0 where empty; never read there); ``count`` (B, F) how many entries
    are valid (0 = the frame has not moved yet); ``level`` (B, F) the level each frame stands at
    after its last step (NaN before its first), which the next step must start from; ``x_last``
    (UniPC only) the sample each frame's last step started from, after correction; ``order``
    (B, F) that step's order.
    """

    x0: tuple[torch.Tensor, ...]
    t: tuple[torch.Tensor, ...]
    count: torch.Tensor
    level: torch.Tensor
    x_last: torch.Tensor | None
    order: torch.Tensor

    @classmethod
    def empty(cls, x: torch.Tensor, depth: int, *, keep_sample: bool = False) -> "FrameHistory":
        B, F = x.shape[:2]
        bf = dict(device=x.device)
        return cls(x0=tuple(torch.zeros_like(x) for _ in range(depth)),
                   t=tuple(torch.ones(B, F, dtype=torch.float64, **bf) for _ in range(depth)),
                   count=torch.zeros(B, F, dtype=torch.long, **bf),
                   level=torch.full((B, F), float("nan"), dtype=torch.float64, **bf),
                   x_last=torch.zeros_like(x) if keep_sample else None,
                   order=torch.zeros(B, F, dtype=torch.long, **bf))

    @property
    def depth(self) -> int:
        return len(self.x0)

    def check(self, x: torch.Tensor, t_from: torch.Tensor, name: str) -> None:
        """The state belongs to this trajectory: same shape, and each frame starts where it stopped."""
        if self.x0[0].shape != x.shape:
            raise ValueError(f"{name}: state was made for x of shape {tuple(self.x0[0].shape)}, got "
                             f"{tuple(x.shape)}; start a new trajectory with sampler.init_state(x)")
        seen = self.count > 0
        if bool((seen & (self.level != t_from.to(torch.float64))).any()):
            raise ValueError(f"{name}: a frame starts this step at another level than its last step ended at "
                             "(re-noised, or a state from another trajectory); a multistep solver needs each frame's "
                             "levels to only go down: use a schedule whose columns never rise, or a one-step sampler "
                             "(ddim) for schedules that re-noise")

    def push(self, moving: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, level: torch.Tensor,
             order: torch.Tensor, x_last: torch.Tensor | None = None) -> "FrameHistory":
        """The state after a step: moving frames (B, F) get the new entry, the others keep theirs."""
        m5 = append_dims(moving, x0.ndim)
        x0s = (torch.where(m5, x0, self.x0[0]),) + tuple(
            torch.where(m5, self.x0[i - 1], self.x0[i]) for i in range(1, self.depth))
        t = t.to(torch.float64)
        ts = (torch.where(moving, t, self.t[0]),) + tuple(
            torch.where(moving, self.t[i - 1], self.t[i]) for i in range(1, self.depth))
        return replace(
            self, x0=x0s, t=ts,
            count=torch.where(moving, (self.count + 1).clamp(max=self.depth), self.count),
            level=torch.where(moving, level.to(torch.float64), self.level),
            order=torch.where(moving, order, self.order),
            x_last=None if self.x_last is None or x_last is None else torch.where(m5, x_last, self.x_last))


def coef(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-frame float64 coefficient (B, F) shaped and typed for x (B, F, C, H, W)."""
    return append_dims(c, x.ndim).to(x.dtype)
