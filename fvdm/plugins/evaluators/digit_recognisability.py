"""digit_recognisability: in what fraction of generated frames does the detector find a digit?

A frame is *recognised* when the per-frame digit detector (digits_frame_net.py) puts at
least ``threshold`` (0.5) of probability on one digit class within a 3x3-cell window
(12x12 px at 32x32), i.e. it confidently finds at least one digit. ``value`` = recognised
frames / scored frames. ``mean_confidence`` = the mean over frames of that largest mass.
Every moving_digits frame holds a digit, so real clips score near 1; noise scores near 0.
"""

from __future__ import annotations

from typing import Any

from einops import rearrange

from fvdm.plugins.evaluators.digits_frame_net import FrameDigitsMetric, frame_mask


class DigitRecognisability(FrameDigitsMetric):
    """Fraction of scored frames in which a digit is confidently found."""

    def evaluate(self, fake: Any, real: Any = None, **kwargs: Any) -> dict[str, Any]:
        """``fake``: videos (B, F, C, H, W), uint8 or float in ``value_range``; ``real`` is not used;
        ``mask`` (B, F) or (F,) bool selects the scored frames (default all)."""
        v = self.videos(fake, "fake")
        b, f = v.shape[:2]
        m = frame_mask(kwargs.get("mask"), (b, f))
        det = self.detections(v)
        conf = rearrange(det.frame_conf, "(b f) -> b f", b=b)[m]  # (n_scored,)
        found = rearrange(det.keep.flatten(1).sum(1), "(b f) -> b f", b=b)[m]
        return {
            "metric": "digit_recognisability",
            "value": float((conf >= self.cfg.threshold).float().mean()),
            "mean_confidence": float(conf.mean()),
            "digits_per_frame": float(found.float().mean()),
            "n_frames": int(m.sum()),
            **self.provenance(),
        }
