"""Built-in samplers: ddpm (ancestral), ddim (eta), euler, heun.

Each is stateless: ``sampler.step(model_fn, x, t_from, t_to, *, schedule, generator=None)``
moves x (B, F, C, H, W) from per-frame levels t_from to t_to (each (B, F));
frames with t_to == t_from come back bit-identical. Classifier-free guidance wraps
``model_fn`` (``fvdm.core.sampling.make_model_fn``), so every sampler supports it.
"""

from fvdm.core.hookspecs import hookimpl


@hookimpl
def fvdm_register_samplers(registry):
    from fvdm.plugins.samplers.ddim import DDIMSampler
    from fvdm.plugins.samplers.ddpm import DDPMSampler
    from fvdm.plugins.samplers.euler import EulerSampler
    from fvdm.plugins.samplers.heun import HeunSampler

    registry.add("ddpm", DDPMSampler)
    registry.add("ddim", DDIMSampler)
    registry.add("euler", EulerSampler)
    registry.add("heun", HeunSampler)
