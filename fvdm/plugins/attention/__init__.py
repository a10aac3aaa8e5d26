"""Built-in attention kernels: math (reference), sdpa, xformers, flex.

Each is ``kernel(q, k, v, *, mask=None, causal=False, scale=None)`` on (B, N, H, D);
availability is a function of the call's device/dtype/gradients, evaluated when
asked (see ``fvdm.core.attention.select_attention_kernel``), never at import.
"""

from __future__ import annotations

from typing import Any

from fvdm.core.hookspecs import hookimpl


@hookimpl
def fvdm_register_attention_kernels(registry: Any) -> None:
    from fvdm.plugins.attention import flex, math, sdpa, xformers

    registry.add("math", math.attention, config=None,
                 description="plain softmax(QK^T)V, materialises scores; the reference")
    registry.add("sdpa", sdpa.attention, config=None, available=sdpa.available,
                 description="torch scaled_dot_product_attention (flash/mem-efficient backends)")
    registry.add("xformers", xformers.attention, config=None, extra="xformers", available=xformers.available,
                 description="xformers memory_efficient_attention (CUDA only)")
    registry.add("flex", flex.attention, config=None, available=flex.available,
                 description="torch FlexAttention, sparse block-causal-over-frames masks")


@hookimpl(trylast=True)
def fvdm_choose_attention_kernel(device: Any, dtype: Any, registry: Any) -> str | None:
    """Default for ``attention: auto``: sdpa (torch dispatches to flash/mem-efficient
    kernels itself, so xformers rarely wins now), math if sdpa cannot run.
    Plugins registering their own hookimpl are asked first; the first non-None wins."""
    for name in ("sdpa", "math"):
        if name in registry and registry.get(name).availability(device=device, dtype=dtype):
            return name
    return None
