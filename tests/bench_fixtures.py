"""Shared fixtures of the digits_zero_shot tests: a random-weight extractor and a micro-scale config."""

from __future__ import annotations

import torch

from fvdm.core import PluginConfig, hookimpl, load_plugins


class RandomDigitsExtractorPlugin:
    @staticmethod
    @hookimpl
    def fvdm_register_feature_extractors(registry):
        from fvdm.plugins.evaluators.digits_net import DigitsExtractor, DigitsNet

        class RandomDigits(DigitsExtractor):
            """Digits network with seeded random weights (the real weights are not needed here)."""

            class Config(PluginConfig):
                seed: int = 0

            def __init__(self, cfg):
                torch.manual_seed(cfg.seed)
                super().__init__(DigitsExtractor.Config(), model=DigitsNet(), weights_sha256=f"random-{cfg.seed}")

        registry.add("digits_random", RandomDigits)


class TrajMetricPlugin:
    """A time-aware evaluator that needs ground-truth trajectories, a dataset without them, a third-party VTV."""

    @staticmethod
    @hookimpl
    def fvdm_register_evaluators(registry):
        class TrajError:
            needs_trajectories = True
            higher_is_better = False

            def evaluate(self, fake, real, *, mask=None, trajectories=None, given=None, task=None):
                return {"value": 0.0}

        registry.add("traj_test", TrajError, config=None)

    @staticmethod
    @hookimpl
    def fvdm_register_datasets(registry):
        from fvdm.plugins.datasets.moving_digits import MovingDigits

        class NoTrajectories:
            """moving_digits' clips without the generator's truth."""

            Config = MovingDigits.Config

            def __init__(self, cfg):
                self.ds = MovingDigits(cfg)
                self.num_frames, self.channels = self.ds.num_frames, self.ds.channels
                self.resolution, self.num_classes = self.ds.resolution, 0

            def __len__(self):
                return len(self.ds)

            def __getitem__(self, i):
                return {"video": self.ds[i]["video"]}

        registry.add("digits_no_traj", NoTrajectories)

    @staticmethod
    @hookimpl
    def fvdm_register_vtv_strategies(registry):
        from fvdm.plugins.vtv.ptss import PTSS

        registry.add("third_party_vtv", PTSS)


MICRO = {"seeds": 2, "train_steps": 2, "sample_steps": 2, "num_uncond": 8, "num_task": 4, "num_long": 2,
         "num_reference": 8}
MICRO_ARMS = [
    {"name": "vanilla", "vtv": {"name": "synchronized"}, "sampling": "replacement"},
    {"name": "vanilla_native", "vtv": {"name": "synchronized"}, "sampling": "native"},
    {"name": "ptss", "vtv": {"name": "ptss", "p": 0.5}, "sampling": "native"},
    {"name": "ptss_stab", "vtv": {"name": "ptss", "p": 0.5}, "sampling": "stabilized", "stabilization": 0.1},
]
MICRO_PARAMS = {
    "quick": MICRO, "arms": MICRO_ARMS, "train_clips": 32, "batch_size": 4, "extractor": {"name": "digits_random"},
    "workers": 1, "min_fvd_clips": 4, "min_reference": 8, "eval_batch": 4, "long_frames": 32,
    "metrics": ["fvd", "psnr", "ssim"],  # the time-aware metrics have their own tests; keep this run small
    "criteria": [{"arm": "ptss", "task": "image_to_video", "metric": "fvd", "why": "the claim"},
                 {"arm": "ptss", "against": "vanilla_native", "task": "interpolation", "metric": "psnr"}],
    "backbone": {"name": "latte_tiny", "patch_size": 4, "hidden_size": 32, "depth": 2, "num_heads": 2}}


def digits_plugins(*extra):
    return load_plugins(entry_points=False, extra_plugins=[("randdigits", RandomDigitsExtractorPlugin), *extra])
