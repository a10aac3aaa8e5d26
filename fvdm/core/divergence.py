"""Stop a diverging run before it saves: a non-finite loss or gradient norm, or a loss spike.

A spike is a step loss above ``spike_factor`` x the median of the last 200 step losses
(checked once 100 are known); the median ignores the rare bad batch that a mean would
follow. The step is not applied, so the newest checkpoint is still good.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from fvdm.core.errors import FvdmError


class NonFiniteLossError(FvdmError, RuntimeError):
    """The loss or gradient norm became NaN/inf (or spiked); training stopped without saving that step."""


def divergence(step_loss: float, grad_norm: float, history: list[float], spike_factor: float,
               step: int) -> str | None:
    """What went wrong at optimizer step ``step`` (1-based), or None when the step is fine."""
    recent = history[-200:]
    if (spike_factor > 0 and len(history) >= 100 and math.isfinite(step_loss)
            and step_loss > spike_factor * statistics.median(recent)):
        return (f"loss spike at step {step} (loss={step_loss:.4g} > {spike_factor:g} x the median "
                f"{statistics.median(recent):.4g} of the last {len(recent)} steps)")
    if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
        return f"non-finite loss at step {step} (loss={step_loss}, grad norm={grad_norm})"
    return None


def diverged_error(what: str, ckpt_path: Path, last_ckpt_step: int | None, run_dir: Path) -> NonFiniteLossError:
    """The error that stops the run: what happened, the last good checkpoint, and how to continue."""
    where = (f"last good checkpoint: {ckpt_path} (step {last_ckpt_step})" if last_ckpt_step is not None
             else "no checkpoint was written yet")
    return NonFiniteLossError(
        f"{what}; training stopped and this step was not applied or saved. {where}. Fix: continue that "
        f"checkpoint with a lower lr: fvdm train CONFIG --run-dir {run_dir} --resume -o train.lr=<lower> "
        "(train.warmup_steps, train.grad_clip and train.spike_factor may change on --resume too), or "
        "disable train.bf16 / check the data."
    )
