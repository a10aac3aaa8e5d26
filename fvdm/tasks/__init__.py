"""Zero-shot tasks: builders of (x_init, ctx, S) per window around one sampling loop.

API (``fvdm.tasks.base``): ``task = plugins["tasks"].build({"name": ..., **options})``,
``video = task.run(SamplingContext(...), inputs)`` -> (B, N, C, H, W).
"""

from fvdm.core.hookspecs import hookimpl


@hookimpl
def fvdm_register_tasks(registry):
    from fvdm.tasks.causal_rollout import CausalRollout
    from fvdm.tasks.class_conditional import ClassConditional
    from fvdm.tasks.df_rollout import DFRollout
    from fvdm.tasks.extension import Extension
    from fvdm.tasks.image_to_video import ImageToVideo
    from fvdm.tasks.infill import Infill
    from fvdm.tasks.interpolation import Interpolation
    from fvdm.tasks.long_video import LongVideo
    from fvdm.tasks.unconditional import Unconditional

    registry.add("unconditional", Unconditional)
    registry.add("class_conditional", ClassConditional)
    registry.add("image_to_video", ImageToVideo)
    registry.add("interpolation", Interpolation)
    registry.add("infill", Infill)
    registry.add("extension", Extension, aliases=("prediction",))  # predicting what follows = extending
    registry.add("long_video", LongVideo)
    registry.add("df_rollout", DFRollout)
    registry.add("causal_rollout", CausalRollout)
