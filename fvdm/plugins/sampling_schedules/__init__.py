"""Built-in sampling-matrix builders: standard, pyramid(u), block_pyramid(u, block), autoregressive, trapezoid(u).

Each is ``builder(num_steps, num_frames, *, context=None, num_timesteps=None) -> S``
of shape (rows, F), rows = K+1 for ``standard``; spacing options are Config fields.
"""

from fvdm.core.hookspecs import hookimpl


@hookimpl
def fvdm_register_sampling_schedules(registry):
    from fvdm.plugins.sampling_schedules.autoregressive import AutoregressiveSchedule
    from fvdm.plugins.sampling_schedules.pyramid import BlockPyramidSchedule, PyramidSchedule
    from fvdm.plugins.sampling_schedules.standard import StandardSchedule
    from fvdm.plugins.sampling_schedules.trapezoid import TrapezoidSchedule

    registry.add("standard", StandardSchedule)
    registry.add("pyramid", PyramidSchedule)
    registry.add("block_pyramid", BlockPyramidSchedule)
    registry.add("autoregressive", AutoregressiveSchedule)
    registry.add("trapezoid", TrapezoidSchedule)
