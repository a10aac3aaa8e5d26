"""Built-in samplers: ddpm (ancestral), ddim (eta), euler, heun; multistep dpmpp_2m, dpmpp_2m_sde, unipc.

The one-step samplers are stateless: ``sampler.step(model_fn, x, t_from, t_to, *, schedule, generator=None)``
moves x (B, F, C, H, W) from per-frame levels t_from to t_to (each (B, F));
frames with t_to == t_from come back bit-identical. The multistep ones keep each frame's
history in an explicit state (``init_state(x)``, ``step(..., state=) -> (x, state)``). Classifier-free guidance wraps
``model_fn`` (``fvdm.core.sampling.make_model_fn``), so every sampler supports it.
"""

from fvdm.core.hookspecs import hookimpl


@hookimpl
def fvdm_register_samplers(registry):
    from fvdm.plugins.samplers.ddim import DDIMSampler
    from fvdm.plugins.samplers.ddpm import DDPMSampler
    from fvdm.plugins.samplers.euler import EulerSampler
    from fvdm.plugins.samplers.dpmpp import DPMSolverPP, DPMSolverPPSDE
    from fvdm.plugins.samplers.heun import HeunSampler
    from fvdm.plugins.samplers.unipc import UniPC

    registry.add("ddpm", DDPMSampler)
    registry.add("ddim", DDIMSampler)
    registry.add("euler", EulerSampler)
    registry.add("heun", HeunSampler)
    registry.add("dpmpp_2m", DPMSolverPP)
    registry.add("dpmpp_2m_sde", DPMSolverPPSDE)
    registry.add("unipc", UniPC)
