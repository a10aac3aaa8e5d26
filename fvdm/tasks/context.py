"""Moved to ``fvdm.core.sampling_context`` (core, beside the sampling loop); these names stay importable here."""

from fvdm.core.sampling_context import (  # noqa: F401
    SamplingContext, Spec, build_context, encode_prompts, make_context, sample_unconditional, torch_generator)
