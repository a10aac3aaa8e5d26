"""pluggy hook specifications: ``fvdm_register_<kind>(registry)`` per plugin kind.

A plugin is any module or object with functions marked ``@hookimpl`` whose names
match these specs. Built-in plugins and third-party ones (entry-point group
``fvdm``) are registered through the same path.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "fvdm"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class FvdmHookSpecs:
    @hookspec
    def fvdm_register_backbones(self, registry: Any) -> None:
        """Add denoising networks: ``model(x (B,F,C,H,W), t (B,F), y=None) -> (B,F,C',H,W)``."""

    @hookspec
    def fvdm_register_noise_schedules(self, registry: Any) -> None:
        """Add forward processes (DDPM, rectified flow) taking per-frame ``t`` (B, F)."""

    @hookspec
    def fvdm_register_vtv_strategies(self, registry: Any) -> None:
        """Add training timestep strategies: ``strategy(B, F, generator=, device=) -> t (B, F)``."""

    @hookspec
    def fvdm_register_samplers(self, registry: Any) -> None:
        """Add samplers stepping x from one per-frame level row to the next."""

    @hookspec
    def fvdm_register_sampling_schedules(self, registry: Any) -> None:
        """Add sampling-matrix builders returning S of shape (K+1, F)."""

    @hookspec
    def fvdm_register_tasks(self, registry: Any) -> None:
        """Add zero-shot tasks (i2v, interpolation, ...) built from per-frame schedules."""

    @hookspec
    def fvdm_register_datasets(self, registry: Any) -> None:
        """Add datasets yielding {"video": (F,C,H,W) in [-1,1], "key": str, "label"?: int}."""

    @hookspec
    def fvdm_register_attention_kernels(self, registry: Any) -> None:
        """Add attention kernels ``(q, k, v, *, mask, causal, scale)`` on (B, N, H, D)."""

    @hookspec
    def fvdm_register_evaluators(self, registry: Any) -> None:
        """Add metrics (FVD, FID, PSNR/SSIM)."""

    @hookspec
    def fvdm_register_feature_extractors(self, registry: Any) -> None:
        """Add feature networks used by evaluators (I3D, InceptionV3, digits)."""

    @hookspec
    def fvdm_register_benchmarks(self, registry: Any) -> None:
        """Add benchmark suites run by ``fvdm bench``."""

    @hookspec
    def fvdm_register_autoencoders(self, registry: Any) -> None:
        """Add pixel <-> latent maps applied per frame (identity, SD VAE)."""

    @hookspec
    def fvdm_register_text_encoders(self, registry: Any) -> None:
        """Add text encoders: ``encoder.encode(prompts) -> (B, L, dim)`` embeddings (umT5)."""

    @hookspec(firstresult=True)
    def fvdm_choose_attention_kernel(self, device: Any, dtype: Any, registry: Any) -> str | None:
        """Pick an attention kernel name for ``attention: auto``; first non-None wins."""
