"""Attention kernels: the shared interface, mask helpers and the selector.

Every kernel is ``kernel(q, k, v, *, mask=None, causal=False, scale=None) -> out``
with q (B, Nq, H, D), k/v (B, Nk, H, D) and out (B, Nq, H, D); a kernel changes to
its library's own layout inside. ``mask`` is one of

* a bool tensor, True = may attend, shape (Nq, Nk) or (B, H, Nq, Nk) (size-1 B/H broadcast);
* a float tensor of the same shapes, added to the scores (-inf blocks);
* a :class:`BlockCausalMask` (tokens grouped by frame; token i sees token j iff
  frame(j) <= frame(i)), which FlexAttention runs sparsely and the others densely.

``causal=True`` is top-left aligned (query i sees keys j <= i, as torch SDPA and
xformers' ``LowerTriangularMask``) and combines with ``mask`` by logical and.
Every query row must see at least one key (a fully masked row is NaN in ``math``).

Kernels are plugins (kind ``attention_kernels``); core never imports them. The
engine and the backbones get one through :func:`select_attention_kernel`, which
decides availability per call (device, dtype, whether gradients are needed) and
falls back, with one warning, to ``sdpa`` (then ``math``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch

from fvdm.core.errors import PluginUnavailableError

#: ``kernel(q, k, v, *, mask=None, causal=False, scale=None) -> out``, all (B, N, H, D).
KernelFn = Callable[..., torch.Tensor]

#: Kernel tried when the requested one cannot run; ``math`` is the last resort.
DEFAULT_FALLBACK = "sdpa"
REFERENCE = "math"

#: ``attention: auto`` on CPU with bf16/fp16 tensors (``train.bf16`` autocast). torch 2.13's CPU
#: SDPA is slower in bf16 than in fp32 (fwd+bwd, latte_s_2 heads, 1 thread, AVX-512 with
#: avx512_bf16: L=256 0.32 vs 0.19 s, L=16 0.25 vs 0.07 s), while bf16 matmuls on a small score
#: matrix are fast (math kernel, L=16: 0.06 s). So auto runs sequences up to this many keys
#: through ``math`` in half precision (softmax in fp32) and longer ones through ``sdpa`` in fp32.
CPU_HALF_MATH_MAX_KEYS = 64


# -- masks ----------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockCausalMask:
    """Block-causal over frames: tokens are frame-major, ``tokens_per_frame`` per frame,
    and token i sees token j iff ``j // tokens_per_frame <= i // tokens_per_frame``.

    With ``tokens_per_frame=1`` this is plain causal attention over frames (Latte's
    temporal blocks, where each sequence is one patch position across frames).
    """

    tokens_per_frame: int = 1

    def __post_init__(self) -> None:
        if int(self.tokens_per_frame) < 1:
            raise ValueError(f"BlockCausalMask: tokens_per_frame must be >= 1, got {self.tokens_per_frame}")

    def dense(self, nq: int, nk: int | None = None, device: Any = None) -> torch.Tensor:
        """The same mask as a bool (Nq, Nk) tensor, True = may attend."""
        nk = nq if nk is None else nk
        fq = torch.arange(nq, device=device) // self.tokens_per_frame
        fk = torch.arange(nk, device=device) // self.tokens_per_frame
        return fk[None, :] <= fq[:, None]


def block_causal_mask(num_frames: int, tokens_per_frame: int = 1, device: Any = None) -> torch.Tensor:
    """Dense bool (N, N) block-causal mask, N = num_frames * tokens_per_frame (True = attend).

    The math/sdpa equivalent of what ``flex`` runs for ``BlockCausalMask``.
    """
    n = num_frames * tokens_per_frame
    return BlockCausalMask(tokens_per_frame).dense(n, n, device)


def causal_mask(nq: int, nk: int | None = None, device: Any = None) -> torch.Tensor:
    """Top-left aligned causal bool (Nq, Nk) mask: query i sees keys j <= i."""
    nk = nq if nk is None else nk
    return torch.ones(nq, nk, dtype=torch.bool, device=device).tril()


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Fail loudly unless q (B, Nq, H, D), k/v (B, Nk, H, D) agree."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"attention: {name} must be (B, N, H, D), got {shape}; "
                "rearrange '(b h) n d -> b n h d' or 'b h n d -> b n h d' before calling the kernel"
            )
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(
            f"attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} disagree; "
            "expected q (B, Nq, H, D) and k, v (B, Nk, H, D)"
        )
    if not (q.dtype == k.dtype == v.dtype) or not (q.device == k.device == v.device):
        raise ValueError(f"attention: q/k/v must share dtype and device, got {q.dtype}/{k.dtype}/{v.dtype} "
                         f"on {q.device}/{k.device}/{v.device}")


def merge_mask(
    mask: "torch.Tensor | BlockCausalMask | None", causal: bool, nq: int, nk: int, *,
    device: Any, dtype: torch.dtype,
) -> torch.Tensor | None:
    """Combine ``mask`` and ``causal`` into one dense tensor (or None when there is neither).

    Returns a bool mask (True = attend) or a float additive mask in ``dtype``, shaped
    (Nq, Nk) or (B|1, H|1, Nq, Nk).
    """
    if isinstance(mask, BlockCausalMask):
        mask = mask.dense(nq, nk, device)
    if mask is not None:
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"attention mask must be a tensor or BlockCausalMask, got {type(mask).__name__}")
        if mask.ndim not in (2, 4) or tuple(mask.shape[-2:]) != (nq, nk):
            raise ValueError(
                f"attention mask has shape {tuple(mask.shape)}; expected (Nq, Nk) = ({nq}, {nk}) or "
                f"(B, H, {nq}, {nk}) with size-1 B/H allowed"
            )
        if mask.dtype != torch.bool and not mask.is_floating_point():
            raise TypeError(f"attention mask must be bool (True = attend) or float (additive), got {mask.dtype}")
        mask = mask.to(device=device)
        if mask.is_floating_point():
            mask = mask.to(dtype)
    if not causal:
        return mask
    c = causal_mask(nq, nk, device)
    if mask is None:
        return c
    if mask.dtype == torch.bool:
        return mask & c
    return mask.masked_fill(~c, float("-inf"))


# -- selection --------------------------------------------------------------------------
def _as_device(device: Any) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def _as_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp64": "float64", "half": "float16"}
    key = str(dtype).removeprefix("torch.")
    obj = getattr(torch, names.get(key, key), None)
    if not isinstance(obj, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use a torch.dtype or one of float32, float16, bfloat16, float64")
    return obj


def _choose(plugins: Any, device: torch.device, dtype: torch.dtype) -> str:
    """``attention: auto``: ask the firstresult hook (third-party plugins first, the
    built-in default last); plain registries without a hook get sdpa, else math."""
    # looked up on the type: Registries.__getattr__ maps unknown attributes to plugin kinds
    has_hook = callable(getattr(type(plugins), "choose_attention_kernel", None))
    name = plugins.choose_attention_kernel(device, dtype) if has_hook else None
    if name is None:
        reg = plugins["attention_kernels"]
        name = DEFAULT_FALLBACK if DEFAULT_FALLBACK in reg else REFERENCE
    return name


class SelectedAttentionKernel:
    """A selected kernel with per-call availability and a one-warning fallback.

    Calling it checks (cached per device, dtype and whether gradients are needed)
    that the requested kernel can run on these tensors; if not, it runs the fallback
    (``sdpa``, else ``math``) and warns once per reason. ``last_used`` names the
    kernel that ran the latest call.
    """

    def __init__(self, registry: Any, name: str, *, requested: str, fallback: str = DEFAULT_FALLBACK,
                 strict: bool = False):
        self.registry = registry
        self.name = name
        self.requested = requested
        self.fallback = fallback
        self.strict = strict
        self.last_used: str | None = None
        self._resolved: dict[tuple[Any, ...], tuple[str, KernelFn]] = {}
        self._warned: set[str] = set()

    def __deepcopy__(self, memo: dict) -> "SelectedAttentionKernel":
        return self  # stateless apart from caches; EMA copies of a model share the kernel

    def __repr__(self) -> str:
        return f"SelectedAttentionKernel(name={self.name!r}, requested={self.requested!r}, fallback={self.fallback!r})"

    def resolve(self, device: Any, dtype: Any, requires_grad: bool = False) -> tuple[str, KernelFn]:
        """(name, fn) of the kernel that runs for this context; warns once when falling back."""
        device, dtype = _as_device(device), _as_dtype(dtype)
        key = (device.type, device.index, dtype, bool(requires_grad))
        hit = self._resolved.get(key)
        if hit is not None:
            return hit
        ctx = {"device": device, "dtype": dtype, "requires_grad": bool(requires_grad)}
        av = self.registry.get(self.name).availability(**ctx)
        if av:
            hit = (self.name, self.registry.get(self.name).obj)
        else:
            where = f"{device.type} {str(dtype).replace('torch.', '')}" + (" with gradients" if requires_grad else "")
            msg = f"attention kernel {self.name!r} is not available for {where}: {av.reason}"
            if self.strict:
                raise PluginUnavailableError(msg + ". Pick another with `attention: sdpa` (or auto).")
            fb = REFERENCE
            for cand in dict.fromkeys((self.fallback, DEFAULT_FALLBACK)):
                if cand != self.name and cand in self.registry and self.registry.get(cand).availability(**ctx):
                    fb = cand
                    break
            if av.reason not in self._warned:  # once per reason, whatever the dtype/grad context
                self._warned.add(av.reason)
                warnings.warn(f"{msg}; falling back to {fb!r}", RuntimeWarning, stacklevel=3)
            hit = (fb, self.registry.get(fb).obj)
        self._resolved[key] = hit
        return hit

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: Any = None,
                 causal: bool = False, scale: float | None = None) -> torch.Tensor:
        needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
        name, fn = self.resolve(q.device, q.dtype, needs_grad)
        if self._routes_cpu_half(name, q.device, q.dtype):
            name, fn = self._cpu_half(fn, k.shape[1])
        self.last_used = name
        return fn(q, k, v, mask=mask, causal=causal, scale=scale)

    def _routes_cpu_half(self, name: str, device: torch.device, dtype: torch.dtype) -> bool:
        """``auto`` chose sdpa for half-precision tensors on a CPU: each call then picks by sequence length."""
        return (self.requested == "auto" and name == DEFAULT_FALLBACK and device.type == "cpu"
                and dtype in (torch.bfloat16, torch.float16))

    def describe(self, device: Any, dtype: Any) -> str:
        """What runs for ``device``/``dtype``, in words (the training log's ``attention ...``)."""
        if self._routes_cpu_half(self.name, _as_device(device), _as_dtype(dtype)):
            return f"auto ({REFERENCE} for <= {CPU_HALF_MATH_MAX_KEYS} keys, else {DEFAULT_FALLBACK} in fp32)"
        return self.name

    def _cpu_half(self, sdpa: KernelFn, nk: int) -> tuple[str, KernelFn]:
        """``auto``'s fastest CPU route for half-precision q/k/v (see CPU_HALF_MATH_MAX_KEYS)."""
        if nk <= CPU_HALF_MATH_MAX_KEYS and REFERENCE in self.registry:
            return REFERENCE, self.registry.get(REFERENCE).obj

        def sdpa_fp32(q, k, v, *, mask=None, causal=False, scale=None):
            # autocast off: CPU autocast would send SDPA straight back to bf16
            with torch.autocast("cpu", enabled=False):
                out = sdpa(q.float(), k.float(), v.float(), mask=mask, causal=causal, scale=scale)
            return out.to(q.dtype)

        return f"{DEFAULT_FALLBACK}(fp32)", sdpa_fp32


def select_attention_kernel(
    plugins: Any, name: str = "auto", *, device: Any = "cpu", dtype: Any = torch.float32,
    fallback: str = DEFAULT_FALLBACK, strict: bool = False,
) -> SelectedAttentionKernel:
    """Pick an attention kernel by name for ``device``/``dtype``.

    ``plugins`` is ``load_plugins()`` (or anything with ``["attention_kernels"]``);
    ``name`` is ``auto`` (the ``fvdm_choose_attention_kernel`` hook decides; the
    built-in default is sdpa) or a registered kernel (math, sdpa, xformers, flex, ...).
    Unknown names raise with the list of choices. A kernel that cannot run here is
    replaced by ``fallback`` with one warning (``strict=True`` raises instead), and
    the returned callable re-checks availability for the tensors of each call.
    """
    reg = plugins["attention_kernels"]
    device, dtype = _as_device(device), _as_dtype(dtype)
    chosen = _choose(plugins, device, dtype) if name == "auto" else name
    reg.get(chosen)  # unknown name -> UnknownPluginError with suggestions
    kernel = SelectedAttentionKernel(reg, chosen, requested=name, fallback=fallback, strict=strict)
    kernel.resolve(device, dtype, requires_grad=False)  # warn (or raise) now, not mid-training
    return kernel


__all__ = [
    "SelectedAttentionKernel", "BlockCausalMask", "CPU_HALF_MATH_MAX_KEYS", "DEFAULT_FALLBACK", "KernelFn", "REFERENCE",
    "block_causal_mask", "causal_mask", "check_qkv", "merge_mask", "select_attention_kernel",
]
