"""Ground truth for the digit metrics, read from a generator dataset (moving_digits).

Only a dataset that rendered the clips knows where every digit is; real video folders do
not. :func:`require_truth` lets a benchmark refuse such data before any training starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class DigitsTruth:
    """labels (B, D) long, -1 = no digit (clips have 1..D digits); trajectories (B, D, F, 2) float
    top-left [y, x] per frame in pixels; digit_size in pixels. centres = top-left + digit_size / 2."""

    labels: torch.Tensor
    trajectories: torch.Tensor
    digit_size: float

    def __post_init__(self) -> None:
        self.labels = torch.as_tensor(self.labels, dtype=torch.long)
        self.trajectories = torch.as_tensor(self.trajectories, dtype=torch.float32)
        b, d = self.labels.shape
        if self.trajectories.ndim != 4 or self.trajectories.shape[:2] != (b, d) or self.trajectories.shape[3] != 2:
            raise ValueError(f"trajectories must be (B, D, F, 2) with (B, D) = {(b, d)} as labels, "
                             f"got {tuple(self.trajectories.shape)}")

    @property
    def centres(self) -> torch.Tensor:
        """(B, D, F, 2) [y, x] digit centres in pixels."""
        return self.trajectories + self.digit_size / 2

    def __len__(self) -> int:
        return self.labels.shape[0]


def require_truth(dataset: Any, metric: str = "trajectory_error") -> None:
    """Refuse, in one line naming the fix, data that cannot give per-digit ground truth."""
    if not (hasattr(dataset, "trajectories") and hasattr(dataset, "metadata") and hasattr(dataset, "digit_size")):
        raise ValueError(f"{metric} needs ground-truth digit positions, which {type(dataset).__name__} does not "
                         "provide; evaluate on the moving_digits dataset or drop this metric")


def digits_truth(dataset: Any, indices: "list[int] | range | np.ndarray | torch.Tensor") -> DigitsTruth:
    """Labels and trajectories of clips ``indices`` of a moving_digits dataset (padded to its max_digits)."""
    require_truth(dataset)
    idx = [int(i) for i in indices]
    metas = [dataset.metadata(i) for i in idx]
    dmax = max([len(m["labels"]) for m in metas], default=1)
    labels = torch.full((len(idx), dmax), -1, dtype=torch.long)
    traj = torch.zeros(len(idx), dmax, dataset.num_frames, 2)
    for k, (i, m) in enumerate(zip(idx, metas)):
        n = len(m["labels"])
        labels[k, :n] = torch.as_tensor(np.asarray(m["labels"], dtype=np.int64))
        traj[k, :n] = torch.from_numpy(dataset.trajectories(i).astype(np.float32))  # (n, F, 2)
    return DigitsTruth(labels=labels, trajectories=traj, digit_size=float(dataset.digit_size))


def as_truth(truth: Any, metric: str) -> DigitsTruth:
    """A DigitsTruth, or a dict with 'labels', 'trajectories' and 'digit_size'; else a one-line error."""
    if isinstance(truth, DigitsTruth):
        return truth
    if isinstance(truth, dict) and {"labels", "trajectories", "digit_size"} <= set(truth):
        return DigitsTruth(truth["labels"], truth["trajectories"], float(truth["digit_size"]))
    raise ValueError(f"{metric} needs ground-truth digit positions: pass truth=digits_truth(moving_digits_dataset, "
                     "clip_indices) (fvdm.plugins.evaluators.digits_truth); data without it cannot be scored")
