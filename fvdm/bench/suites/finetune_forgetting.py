"""``finetune_forgetting``: does fine-tuning a conventional video model into an FVDM model forget what it could do?

FVDM's summary claims that per-frame timesteps let a model gain zero-shot tasks in fine-tuning
without catastrophic forgetting. Every arm here fine-tunes the same committed base (a synchronized
``unet_video`` on moving digits, ``fvdm/bench/weights/digits_sync_base``, made by
``benchmarks/train_digits_base.py``) for the same steps, data order and noise (paired by seed), and
is then scored like ``digits_zero_shot`` scores its arms: unconditional FVD and recognisability (what
an arm kept), image-to-video / interpolation / extension / long-video FVD, identity and trajectory
error (what it gained), paired differences with 95% intervals. The arms:

* ``base``: the base itself, evaluated through the same pipeline (a fine-tune at lr 1e-12: Adam
  moves no weight by more than ~1e-10), conditioned the conventional way (replacement);
* ``continue_sync``: fine-tuned synchronized, the control that spends the same compute, sampled by
  replacement (the conventional way a synchronized model does image-to-video);
* ``ptss``: PTSS (p = 0.2), the FVDM fine-tune of every weight, native sampling;
* ``ptss_lora``: the same with rank-16 LoRA adapters on the frozen base (attention and FiLM layers);
* ``independent``: every frame its own level (Pusa V1's choice), native sampling;
* ``i2v_specific``: the conventional image-to-video fine-tune (``clean_first``: frame 0 always clean,
  the others one shared level), native sampling.

The criteria are fixed here, before a run (``DEFAULT_CRITERIA``); the README states what a run's
intervals support in either direction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from fvdm.bench.suites.digits_zero_shot import DigitsZeroShotSuite
from fvdm.bench.suites.digits_zero_shot.design import Arm, Budget, Config, Criterion

#: the committed base every arm starts from (an fvdm backbone directory: config.json + model.safetensors)
BASE_DIR = Path(__file__).resolve().parents[1] / "weights" / "digits_sync_base"

SYNC, PTSS = {"name": "synchronized"}, {"name": "ptss", "p": 0.2}
FINETUNE_ARMS = [
    {"name": "base", "vtv": SYNC, "sampling": "replacement", "steps_multiplier": 0.01, "train": {"lr": 1e-12}},
    {"name": "continue_sync", "vtv": SYNC, "sampling": "replacement"},
    {"name": "ptss", "vtv": PTSS, "sampling": "native"},
    # rank 16 on the U-Net's attention and FiLM layers (where each frame's level enters), 5x the full lr
    {"name": "ptss_lora", "vtv": PTSS, "sampling": "native",
     "train": {"lora": {"rank": 16, "target_modules": ["qkv", "proj", "film"]}, "lr": 1e-3}},
    {"name": "independent", "vtv": {"name": "independent"}, "sampling": "native"},
    {"name": "i2v_specific", "vtv": {"name": "clean_first"}, "sampling": "native"},
]


def _crit(arm: str, task: str, why: str, against: str = "continue_sync", metric: str = "fvd") -> dict[str, Any]:
    return {"arm": arm, "task": task, "metric": metric, "why": why, "against": against}


DEFAULT_CRITERIA = [
    # what fine-tuning forgets (unconditional generation, the base's one ability)
    _crit("ptss", "unconditional", "PTSS forgets no more than continuing synchronized: contradicted = it does"),
    _crit("continue_sync", "unconditional", "the i2v-specific fine-tune loses unconditional quality: supported = "
          "the control beats it", against="i2v_specific"),
    _crit("ptss", "unconditional", "PTSS keeps unconditional generation better than the task-specific fine-tune",
          against="i2v_specific"),
    # what it gains, zero-shot
    *[_crit("ptss", t, "PTSS fine-tuning gains this task over the same compute spent synchronized")
      for t in ("image_to_video", "interpolation", "extension", "long_video")],
    _crit("ptss", "image_to_video", "the gain is the fine-tune's, not the base's", against="base"),
    # where the task-specific arm wins its own task and fails the others
    _crit("i2v_specific", "image_to_video", "the task-specific fine-tune wins its own task", against="ptss"),
    *[_crit("ptss", t, "the task-specific fine-tune does not transfer to other context tasks",
            against="i2v_specific") for t in ("interpolation", "extension")],
    _crit("independent", "image_to_video", "independent levels (Pusa's choice) also gain image-to-video"),
    _crit("ptss_lora", "image_to_video", "a LoRA fine-tune gains image-to-video too"),
    _crit("ptss_lora", "unconditional", "a LoRA forgets less than a full fine-tune: contradicted = more",
          against="ptss"),
]


class FinetuneConfig(Config):
    """``digits_zero_shot``'s design with every model fine-tuned from the committed synchronized base."""

    # 400 steps, 32 clips per task: 1000 steps did not fit the 2-core machine (this budget took 114 min there,
    # two worker processes); --device cuda with --set standard.train_steps=... for more
    standard: Budget = Budget(seeds=5, train_steps=400, sample_steps=8, num_uncond=256, num_task=32, num_long=16)
    quick: Budget = Budget(seeds=1, train_steps=100, sample_steps=8, num_uncond=256, num_task=16, num_long=2)
    arms: list[Arm] | None = Field(default_factory=lambda: [Arm(**a) for a in FINETUNE_ARMS])
    criteria: list[Criterion] | None = Field(default_factory=lambda: [Criterion(**c) for c in DEFAULT_CRITERIA])
    baseline: str = "continue_sync"
    init_from: str | None = Field(str(BASE_DIR), description="the base every arm fine-tunes from (default: the "
                                                             "committed synchronized digits base)")
    ema_decay: float = Field(0.99, ge=0, le=1, description="short fine-tunes: a short EMA horizon")
    lr: float = Field(2e-4, gt=0, description="fine-tuning lr (the base trained at 1e-3)")


class FinetuneForgettingSuite(DigitsZeroShotSuite):
    """Fine-tune the committed synchronized digits base per arm (PTSS, independent, task-specific, control)."""

    Config = FinetuneConfig

    def run(self, out_dir: Any, *, plugins: Any, quick: bool = False, seed: int = 0, threads: int = 1,
            ledger: Any = None) -> dict:
        base = Path(self.cfg.init_from or "")
        if self.cfg.init_from and not (base.is_file() or (base / "model.safetensors").is_file()):
            raise ValueError(f"finetune_forgetting: the base {base} is missing; it is committed with fvdm "
                             "(fvdm/bench/weights/digits_sync_base) or made by benchmarks/train_digits_base.py "
                             "--out DIR (then --set init_from=DIR)")
        return super().run(out_dir, plugins=plugins, quick=quick, seed=seed, threads=threads, ledger=ledger)
