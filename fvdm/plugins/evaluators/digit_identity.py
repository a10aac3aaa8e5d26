"""digit_identity: do the digits in generated frames match the given frames' digits?

Per scored frame, the set of digit classes the detector finds is compared with a
reference set by F1 (2|P∩R| / (|P| + |R|); 1 when both are empty). The reference is the
ground-truth labels when given (``labels`` (B, D) or ``truth``), else the classes found in
at least half of the given (context) frames of ``real`` (or of ``fake`` when no real is
passed). ``value`` = mean F1; ``exact_match`` = fraction of frames whose set equals the
reference. Occlusion (digits overlap and combine by max) keeps real clips a little below 1.
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange

from fvdm.plugins.evaluators.digits_frame_net import FrameDigitsMetric, context_frames, frame_mask
from fvdm.plugins.evaluators.digits_truth import as_truth


def label_sets(labels: torch.Tensor) -> torch.Tensor:
    """labels (B, D), -1 = none -> (B, 10) bool class sets."""
    sets = torch.zeros(labels.shape[0], 10, dtype=torch.bool)
    b, d = torch.nonzero(labels >= 0, as_tuple=True)
    sets[b, labels[b, d]] = True
    return sets


def set_f1(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """pred, ref (..., 10) bool -> F1 (...), 1 where both are empty."""
    inter = (pred & ref).sum(-1).float()
    total = (pred.sum(-1) + ref.sum(-1)).float()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


class DigitIdentity(FrameDigitsMetric):
    """Mean per-frame F1 between detected digit classes and the reference (given-frame or true) classes."""

    def evaluate(self, fake: Any, real: Any = None, **kwargs: Any) -> dict[str, Any]:
        """``fake``: (B, F, C, H, W). Reference: ``labels`` (B, D) (-1 = none) or ``truth`` (DigitsTruth), else
        ``context`` (given frame indices or (F,) bool) read from ``real`` (B, F, ...) or ``fake``.
        ``mask`` (B, F)/(F,) bool: scored frames (default: the frames not in ``context``, else all)."""
        v = self.videos(fake, "fake")
        b, f = v.shape[:2]
        ctx = kwargs.get("context")
        ctx = None if ctx is None else context_frames(ctx, f)
        labels = kwargs.get("labels")
        if labels is None and kwargs.get("truth") is not None:
            labels = as_truth(kwargs["truth"], "digit_identity").labels
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long)
            if labels.ndim != 2 or labels.shape[0] != b:
                raise ValueError(f"labels must be (B, D) with B = {b}, got {tuple(labels.shape)}")
            ref, source = label_sets(labels), "labels"
        elif ctx is not None and ctx.any():
            src = v if real is None else self.videos(real, "real")
            if src.shape[:2] != (b, f):
                raise ValueError(f"real must be (B, F) = {(b, f)} clips like fake, got {tuple(src.shape[:2])}")
            given = src[:, ctx]  # (B, n_ctx, C, H, W)
            seen = rearrange(self.detections(given).present, "(b k) c -> b k c", b=b).sum(1)  # (B, 10)
            ref = seen >= (int(ctx.sum()) + 1) // 2  # found in at least half of the given frames
            source = "context_frames_of_" + ("fake" if real is None else "real")
        else:
            raise ValueError("digit_identity needs a reference: pass labels=(B, D) or truth=, or context=[given "
                             "frame indices] for a conditional task")
        default = None if ctx is None or ctx.all() else (~ctx).expand(b, -1).clone()
        m = frame_mask(kwargs.get("mask"), (b, f), default)
        pred = rearrange(self.detections(v).present, "(b f) c -> b f c", b=b)  # (B, F, 10)
        refs = ref[:, None, :].expand(-1, f, -1)
        f1 = set_f1(pred, refs)[m]
        return {
            "metric": "digit_identity",
            "value": float(f1.mean()),
            "exact_match": float((pred == refs).all(-1)[m].float().mean()),
            "reference": source,
            "n_frames": int(m.sum()),
            **self.provenance(),
        }
