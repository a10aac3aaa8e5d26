"""The hook implementations fvdm calls (entry point ``fvdm_plugin_example.plugin``)."""

from __future__ import annotations

from fvdm.core import hookimpl


@hookimpl
def fvdm_register_vtv_strategies(registry):
    from fvdm_plugin_example.correlated_frames import CorrelatedFrames

    registry.add("correlated_frames", CorrelatedFrames)


@hookimpl
def fvdm_register_sampling_schedules(registry):
    from fvdm_plugin_example.keyframes_first import KeyframesFirst

    registry.add("keyframes_first", KeyframesFirst)


@hookimpl
def fvdm_register_benchmarks(registry):
    from fvdm_plugin_example.frame_correlation_suite import FrameCorrelationSuite

    registry.add("frame_correlation", FrameCorrelationSuite)
