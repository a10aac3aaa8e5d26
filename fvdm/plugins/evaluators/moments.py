"""Streaming first and second moments of feature rows in float64.

Each batch is reduced to ``(n, mean, M2)`` with ``M2 = sum (x - mean)(x - mean)^T``
and merged with Chan et al.'s pairwise update, so the result does not depend on how
the rows were split into batches (up to rounding) and never forms the
catastrophically cancelling ``sum x x^T - n mean mean^T``. Across DDP ranks the
same merge is done with two all-reduces (global mean first, then centred scatter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def _as_rows(x: Any) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"features must be a tensor or ndarray of shape (N, dim), got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"features must have shape (N, dim), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"features must be floating point, got {x.dtype}")
    return x.detach().to(device="cpu", dtype=torch.float64)


@dataclass
class StreamingMoments:
    """Mean and covariance of rows seen so far; ``update`` per batch, ``merge`` partials.

    ``n`` rows, ``mean`` (dim,), ``m2`` (dim, dim) centred scatter, all float64.
    """

    dim: int
    n: int = 0
    mean: torch.Tensor | None = None
    m2: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.mean is None:
            self.mean = torch.zeros(self.dim, dtype=torch.float64)
        if self.m2 is None:
            self.m2 = torch.zeros(self.dim, self.dim, dtype=torch.float64)
        if self.mean.dtype != torch.float64 or self.m2.dtype != torch.float64:
            raise TypeError("StreamingMoments holds float64 statistics; got "
                            f"mean {self.mean.dtype}, m2 {self.m2.dtype}")

    @classmethod
    def from_features(cls, x: Any) -> "StreamingMoments":
        """Moments of one (N, dim) block of rows."""
        x = _as_rows(x)
        n, d = x.shape
        if n == 0:
            return cls(d)
        mean = x.mean(0)
        xc = x - mean
        return cls(d, n, mean, xc.T @ xc)

    def update(self, x: Any) -> "StreamingMoments":
        """Add a batch of rows (N, dim); returns self."""
        other = StreamingMoments.from_features(x)
        if other.dim != self.dim:
            raise ValueError(f"feature dim changed: accumulating {self.dim}-d rows, got {other.dim}-d")
        return self.merge_(other)

    def merge_(self, other: "StreamingMoments") -> "StreamingMoments":
        """Chan's pairwise merge of two partial moments, in place."""
        if other.n == 0:
            return self
        if self.n == 0:
            self.n, self.mean, self.m2 = other.n, other.mean.clone(), other.m2.clone()
            return self
        n = self.n + other.n
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.n / n)
        self.m2 = self.m2 + other.m2 + torch.outer(delta, delta) * (self.n * other.n / n)
        self.n = n
        return self

    def all_reduce_(self, group: Any = None) -> "StreamingMoments":
        """Merge the partial moments of every DDP rank (no-op without a process group).

        Two SUM all-reduces: ``n`` and ``n*mean`` give the global mean ``m``; then each
        rank contributes ``M2_r + n_r (mean_r - m)(mean_r - m)^T``. Exact in exact arithmetic,
        and every rank ends with the same numbers.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
            return self
        backend_dev = self.mean.device
        if dist.get_backend(group) == "nccl":
            backend_dev = torch.device("cuda", torch.cuda.current_device())
        head = torch.cat([torch.tensor([float(self.n)], dtype=torch.float64), self.mean * self.n]).to(backend_dev)
        dist.all_reduce(head, group=group)
        n_total = int(round(float(head[0])))
        mean = (head[1:] / max(n_total, 1)).cpu()
        delta = self.mean - mean
        part = (self.m2 + torch.outer(delta, delta) * self.n).to(backend_dev)
        dist.all_reduce(part, group=group)
        self.n, self.mean, self.m2 = n_total, mean, part.cpu()
        return self

    def cov(self, ddof: int = 0) -> torch.Tensor:
        """Covariance (dim, dim): biased (``ddof=0``, StyleGAN-V) or unbiased (``ddof=1``, np.cov)."""
        if ddof not in (0, 1):
            raise ValueError(f"ddof must be 0 (biased, StyleGAN-V) or 1 (unbiased, pytorch-fid), got {ddof}")
        if self.n - ddof <= 0:
            raise ValueError(f"need more than {ddof} rows for a covariance with ddof={ddof}, have {self.n}")
        return self.m2 / (self.n - ddof)
