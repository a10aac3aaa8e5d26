"""Built-in noise schedules: ``ddpm`` (FVDM/Latte/DiT) and ``rectified_flow`` (Pusa/SD3)."""

from fvdm.core.hookspecs import hookimpl


@hookimpl
def fvdm_register_noise_schedules(registry):
    from fvdm.plugins.noise_schedules.ddpm import DDPMSchedule
    from fvdm.plugins.noise_schedules.rectified_flow import RectifiedFlowSchedule

    registry.add("ddpm", DDPMSchedule)
    registry.add("rectified_flow", RectifiedFlowSchedule)
