"""The ``digits_zero_shot`` suite: the FVDM paper's zero-shot claim as a fair, paired experiment.

Design (every part is a config field; the defaults are the pre-registered design)

- **Arms.** An arm is a name, a training VTV strategy spec (any registered
  ``vtv_strategies`` entry with its params, a third-party plugin's too), a
  training-steps multiplier and a sampling mode:

  ``native``       context frames held at level 0 by the per-frame schedule (FVDM)
  ``replacement``  the vanilla replacement trick: context re-noised to the generated
                   frames' level every step, clean values put back at the end
  ``stabilized``   context shown to the model at a small nonzero level
                   (``stabilization``, Diffusion Forcing), its values kept clean

  Arms with the same training spec (strategy + params + multiplier) share one
  trained model per seed: it is trained once and sampled each way. ``arm_preset``
  picks the default arms, ``arms`` replaces them, ``extra_arms`` adds to them.
- **Defaults.** vanilla = synchronized + replacement (the classic baseline, the row
  every difference is taken against); PTSS p in {0.1, 0.2, 0.5}; independent (p=1);
  PTSS p=0.2 at 1.25x the steps: PTSS synchronizes a clip with probability 1-p = 0.8,
  so 1.25x the steps shows it as many synchronized clips as vanilla sees (0.8 x 1.25
  = 1), which separates "PTSS adds per-frame training" from "PTSS takes synchronized
  training away"; the 2x2 of training (synchronized / PTSS 0.2) x sampling (native /
  replacement), which separates the training effect from the sampling effect; and
  PTSS 0.2 with stabilized sampling.
- **Paired seeds.** Per seed every model sees the same data order and the same
  training noise tensors (the engine's separate t / noise / label generators), and
  every test clip gets the same sampling noise in every arm (one generator per
  (seed, task, batch), on the sampling device).
- **Data.** Conditioning clips (and their ground truth) come from the test split
  with ``conditioning_seed``; the FVD reference statistics from ``num_reference``
  (>= 1024) clips of the same split drawn with ``reference_seed`` (a different seed:
  the same distribution, no clip in common; checked), so no generated clip contains
  a copy of a reference frame.
- **Statistics** (``fvdm.bench.stats``). Per seed, per task and metric: the paired
  difference arm - vanilla; mean and 95% confidence interval with the t distribution.
- **Success criteria** (``criteria``, ``extra_criteria``) are fixed in the config before
  the run and printed with a verdict: *supported* when the 95% CI of the paired difference
  excludes 0 in the arm's favour, *contradicted* when it excludes 0 against it,
  *inconclusive* otherwise (and always with fewer than 2 seeds).
- **Trivial baselines** per conditional task (all-black, mean frame of the reference
  set, copy of the nearest given frame, ground truth + N(0, sigma^2) noise, sigma on
  the [-1, 1] scale) and, for unconditional FVD, the real clips with and without noise.
- **Metrics** (``metrics``): ``fvd`` (the ``extractor``; float64 statistics, biased
  covariance) and any registered evaluator by name, called as
  ``evaluate(fake, real, mask=..., [given=, context=, task=, trajectories=, truth=])``
  on [0, 1] clips (an evaluator without ``**kwargs`` gets the keys it names;
  ``truth`` is ``digits_truth(dataset, clips)`` when that module exists); one that
  needs ground-truth trajectories (``needs_trajectories: true`` in its metrics entry
  or as a class attribute, ``"trajectories"`` in ``needs``, a required
  ``trajectories`` parameter, or a name in ``TRUTH_METRICS``) is refused on data
  without ``trajectories()``.
- **Budgets** (``standard`` by default, ``quick`` with --quick). ``plan()`` counts what a
  budget costs (training steps; sampled clip-windows, each ``sample_steps`` model calls)
  and estimates the minutes from ``UNIT_COSTS``; the measured times are in
  docs/benchmarks.md, and every results.json records ``plan``, ``costs`` and the seconds
  of every training and task.

Bad input is refused with a one-line ``BenchmarkError`` before any training starts.

The modules: ``design`` (tasks, arms, budgets, criteria, the Config, plan), ``validation``
(the checks, each model's training config), ``scoring`` (FVD and evaluators), ``baselines``
(the real sets and the trivial baselines), ``workers`` (train and sample one model),
``analysis`` (summaries, paired differences, criteria, versus baselines), ``report``
(tables, plots, notes) and ``suite`` (the registered class).
"""

from fvdm.bench.stats import mean_ci, t_quantile, verdict
from fvdm.bench.suites.digits_zero_shot.design import (ARM_PRESETS, COND_TASK_TABLE, COND_TASKS, DEFAULT_ARMS,
                                                       DEFAULT_CRITERIA, DIRECTIONS, PRIMARY_ARMS, SAMPLING_MODES,
                                                       TARGETS, TASKS, TRUTH_METRICS, TRUTH_ROWS, UNIT_COSTS, Arm,
                                                       Budget, CondTask, Criterion)
from fvdm.bench.suites.digits_zero_shot.suite import DigitsZeroShotSuite

__all__ = ["DigitsZeroShotSuite", "Arm", "Budget", "Criterion", "CondTask", "mean_ci", "verdict", "t_quantile",
           "ARM_PRESETS", "COND_TASK_TABLE", "COND_TASKS", "DEFAULT_ARMS", "DEFAULT_CRITERIA", "DIRECTIONS",
           "PRIMARY_ARMS", "SAMPLING_MODES", "TARGETS", "TASKS", "TRUTH_METRICS", "TRUTH_ROWS", "UNIT_COSTS"]
