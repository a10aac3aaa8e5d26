"""Stop a diverging run before it saves: a non-finite loss or gradient norm, or a loss spike, from step 1 on.

A spike is a step loss above ``spike_factor`` x the median of the last 200 step losses once
100 are known (the median ignores the rare bad batch that a mean would follow). Before that
the median is not armed, and a blow-up is most likely then: too high an lr explodes the
weights within a step (``train.lr=1e6`` on the demo recipe: step 1 loss 0.06, step 2 4e11).
So from step 2 on a step is also refused when its loss exceeds ``EARLY_FACTOR x spike_factor``
x the largest of the run's first 10 losses (at least 1, the scale of an MSE on unit-variance
targets). The margin is wide because one early batch's loss is noisy: on 1-4 clips at
initialisation it was measured to range over 4 orders of magnitude with min-SNR weighting
(all frames at low noise) and to reach 190x its median with the bound term (x0 prediction),
while a blow-up is 1e6 x and more. The step is not applied.

The weights a refused step was computed from are the newest step's: a checkpoint written
after that step holds them, so it is not good. A checkpoint is good once the step after it
passed this guard; ``diverged_error`` names only such a one, and otherwise says to start
again with a lower lr.
"""

from __future__ import annotations

import math
import shlex
import statistics
from pathlib import Path

from fvdm.core.errors import FvdmError

#: the running median of the last WINDOW losses is used once this many losses are known
ARM_STEPS = 100
WINDOW = 200
#: before that, a step is compared with EARLY_FACTOR x spike_factor x the largest of the first REFERENCE_STEPS
#: losses, and never less than 1 (see the module docstring for the margin)
REFERENCE_STEPS = 10
EARLY_FACTOR = 100.0


class NonFiniteLossError(FvdmError, RuntimeError):
    """The loss or gradient norm became NaN/inf (or spiked); training stopped without applying that step."""


def divergence(step_loss: float, grad_norm: float, history: list[float], spike_factor: float,
               step: int) -> str | None:
    """What went wrong at optimizer step ``step`` (1-based), or None when the step is fine.

    ``history``: the loss of every accepted step since step 0 (a resumed run's included).
    """
    if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
        return f"non-finite loss at step {step} (loss={step_loss}, grad norm={grad_norm})"
    if spike_factor <= 0 or not history:
        return None
    if len(history) >= ARM_STEPS:
        recent = history[-WINDOW:]
        median = statistics.median(recent)
        if step_loss > spike_factor * median:
            return (f"loss spike at step {step} (loss={step_loss:.4g} > {spike_factor:g} x the median "
                    f"{median:.4g} of the last {len(recent)} steps)")
        return None
    first = history[:REFERENCE_STEPS]
    reference = max(1.0, *first)
    factor = EARLY_FACTOR * spike_factor
    if step_loss > factor * reference:
        return (f"loss jump at step {step} (loss={step_loss:.4g} > {factor:g} x {reference:.4g} = max(1, the first "
                f"{len(first)} step losses); the running-median check starts at step {ARM_STEPS + 1})")
    return None


def lower_lr(lr: float) -> float:
    """The lr a diverged run is advised to try: a tenth, and no more than 1e-4 (DiT/Latte's)."""
    return float(f"{min(lr / 10, 1e-4):.2g}")


def diverged_error(what: str, run_dir: Path, lr: float, good: Path | None, good_step: int | None,
                   why_none: str) -> NonFiniteLossError:
    """The error that stops the run: what happened, the last good checkpoint (or why there is none), and the
    command that continues: resume the good checkpoint, else start the run again, each with a lower lr.

    The command reads the run's own ``config.yaml`` (the config with every override in it), so it runs as printed.
    """
    base = ["fvdm", "train", str(run_dir / "config.yaml"), "--run-dir", str(run_dir)]
    fix_lr = ["-o", f"train.lr={lower_lr(lr):g}"]
    head = f"{what}; training stopped and this step was not applied."
    if good is not None:
        cmd = shlex.join(base + ["--resume"] + fix_lr)
        return NonFiniteLossError(
            f"{head} last good checkpoint: {good} (step {good_step}). Fix: continue it with a lower lr: `{cmd}` "
            "(train.warmup_steps, train.grad_clip and train.spike_factor may change on --resume too), or disable "
            "train.bf16 / check the data.")
    cmd = shlex.join(base + ["--overwrite"] + fix_lr)
    return NonFiniteLossError(
        f"{head} No good checkpoint to continue: {why_none}. Fix: start the run again with a lower lr: `{cmd}` "
        "(or raise train.warmup_steps), or disable train.bf16 / check the data.")
