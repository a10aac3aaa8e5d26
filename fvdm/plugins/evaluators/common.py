"""Shared boundary checks for evaluators: pixel ranges, state-dict loading, reference key lists."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

REFERENCE_DIR_ENV = "FVDM_REFERENCE_DIR"


def to_uint8_video(x: Any, name: str = "videos", *, value_range: str = "auto") -> torch.Tensor:
    """uint8 as-is, or float declared in [0, 1] -> uint8 (round(x*255)).

    ``value_range``: "auto" (uint8, or float that must lie in [0, 1]), "0_1", "-1_1"
    (the dataset contract's range, converted explicitly). Anything else is refused
    with the observed range.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor/ndarray, got {type(x).__name__}")
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise TypeError(f"{name} must be uint8 or float in [0, 1], got {x.dtype}")
    if value_range == "-1_1":
        x = (x + 1) / 2
    elif value_range not in ("auto", "0_1"):
        raise ValueError(f"value_range must be 'auto', '0_1' or '-1_1', got {value_range!r}")
    if x.numel():
        lo, hi = float(x.min()), float(x.max())
        if not (lo >= -1e-6 and hi <= 1 + 1e-6) or x.isnan().any():
            raise ValueError(
                f"{name}: float pixels must lie in [0, 1]; observed range [{lo:.4g}, {hi:.4g}]. "
                "Pass uint8 frames, scale [0, 255] floats by 1/255, or map [-1, 1] with (x + 1) / 2."
            )
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def to_rgb(x: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """Repeat a single grey channel to 3 (as StyleGAN-V does); refuse other channel counts."""
    c = x.shape[channel_dim]
    if c == 3:
        return x
    if c == 1:
        reps = [1] * x.ndim
        reps[channel_dim] = 3
        return x.repeat(*reps)
    raise ValueError(f"expected 1 or 3 channels at dim {channel_dim}, got {c} (shape {tuple(x.shape)})")


def unwrap_state_dict(sd: Any) -> dict[str, torch.Tensor]:
    """Accept {"state_dict": ...}/{"model": ...} wrappers and a DataParallel "module." prefix."""
    if isinstance(sd, Mapping):
        for key in ("state_dict", "model"):
            if key in sd and isinstance(sd[key], Mapping) and not isinstance(sd.get(key), torch.Tensor):
                sd = sd[key]
                break
    if not isinstance(sd, Mapping):
        raise TypeError(f"expected a state dict (mapping of tensors), got {type(sd).__name__}")
    keys = list(sd)
    if keys and all(k.startswith("module.") for k in keys):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def load_state_dict_checked(module: torch.nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> None:
    """Strict load that tolerates absent BatchNorm counters and explains every mismatch."""
    sd = unwrap_state_dict(sd)
    own = module.state_dict()
    optional = {k for k in own if k.endswith("num_batches_tracked")}
    missing = sorted(set(own) - set(sd) - optional)
    unexpected = sorted(set(sd) - set(own))
    bad_shape = sorted(
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(sd) if tuple(sd[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or bad_shape:
        def show(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" ... (+{len(items) - 8} more)" if len(items) > 8 else "")
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {show(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {show(unexpected)}")
        if bad_shape:
            parts.append(f"{len(bad_shape)} shape mismatch(es): {show(bad_shape)}")
        raise ValueError(
            f"{what}: the state dict does not fit the architecture — " + "; ".join(parts) +
            ". Is this the right weights file for this extractor?"
        )
    full = dict(sd)
    for k in optional - set(sd):
        full[k] = own[k]
    module.load_state_dict(full, strict=True)


def load_extractor_net(factory: Any, key_or_filename: str, path: Any, *, sha256: str | None, what: str,
                       model: torch.nn.Module | None = None,
                       weights_sha256: str | None = None) -> tuple[torch.nn.Module, str]:
    """(eval-mode network, weights sha256): a given module as is, else ``factory()`` loaded strictly from the
    verified weights file (explicit path or ``$FVDM_WEIGHTS_DIR``; never downloaded)."""
    if model is not None:
        return model.eval(), weights_sha256 or "unverified-module"
    from fvdm.plugins.evaluators.weights import resolve_weights

    file, digest = resolve_weights(key_or_filename, path, sha256=sha256)
    net = factory()
    load_state_dict_checked(net, torch.load(Path(file), map_location="cpu", weights_only=True), f"{what} {file}")
    return net.eval(), digest


def read_reference_keys(path: str | Path) -> list[tuple[str, tuple[int, ...]]]:
    """Parse a ``key<TAB>(shape)`` listing as in ``fvdm/plugins/evaluators/reference/*.tsv``."""
    out = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        key, shape = line.split("\t")
        dims = shape.strip().strip("()").replace(" ", "")
        out.append((key, tuple(int(d) for d in dims.split(",") if d)))
    return out
