"""Built-in VTV (vectorized timestep) training strategies.

Each is a stateless callable ``strategy(batch_size, num_frames, *, generator=None,
device="cpu") -> u`` (B, F) float32 in [0, 1]; the engine then calls
``schedule.snap(u)``.
"""

from fvdm.core.hookspecs import hookimpl


@hookimpl
def fvdm_register_vtv_strategies(registry):
    from fvdm.plugins.vtv.diffusion_forcing import DiffusionForcing
    from fvdm.plugins.vtv.independent import Independent
    from fvdm.plugins.vtv.ptss import PTSS
    from fvdm.plugins.vtv.synchronized import Synchronized

    registry.add("synchronized", Synchronized)
    registry.add("independent", Independent)
    registry.add("ptss", PTSS)
    registry.add("diffusion_forcing", DiffusionForcing)

    from fvdm.plugins.vtv.clean_first import CleanFirst

    registry.add("clean_first", CleanFirst, description="frame 0 clean, the others one shared level: the "
                                                        "task-specific image-to-video fine-tune")

    from fvdm.plugins.vtv.context_mix import ContextMix

    registry.add("context_mix", ContextMix, description="PTSS plus task-shaped draws (given frames clean, the "
                                                        "rest one level): context-heavy FVDM training")
