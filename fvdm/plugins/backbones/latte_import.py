"""Load Latte / FVDM public checkpoints into ``fvdm``'s Latte backbone.

Key maps (everything else keeps its name: x_embedder.proj, t_embedder.mlp.0/2,
y_embedder.embedding_table, final_layer.linear / adaLN_modulation.1, pos_embed, temp_embed):

  Latte   blocks.{2i}.*           -> spatial_blocks.{i}.*
          blocks.{2i+1}.*         -> temporal_blocks.{i}.*
  FVDM    blocks_spatial.{i}.*    -> spatial_blocks.{i}.*
          blocks_temp.{i}.*       -> temporal_blocks.{i}.*

Wrappers are unpacked (``{"ema": ...}`` preferred over ``{"model": ...}``) and DDP / torch.compile
prefixes (``module.``, ``_orig_mod.``) stripped. ``pos_embed``/``temp_embed`` are fixed sin-cos
tables: when their shape differs (other input_size / num_frames) the model's own table is kept and
reported, never an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

FIXED_TABLES = ("pos_embed", "temp_embed")
_PREFIXES = ("module.", "_orig_mod.", "model.")
_LATTE_BLOCK = re.compile(r"^blocks\.(\d+)\.(.*)$")
_FVDM_BLOCK = re.compile(r"^blocks_(spatial|temp)\.(\d+)\.(.*)$")


@dataclass
class ImportReport:
    """What an import did; ``ok`` is True when every model key was loaded with a matching shape."""

    layout: str  # "latte" | "fvdm" | "fvdm-native"
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # model keys the checkpoint lacks
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys (original names) with no place
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # (key, ckpt, model)
    kept_fixed: list[str] = field(default_factory=list)  # sin-cos tables kept from the model (shape differs)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        lines = [f"layout={self.layout}: loaded {len(self.loaded)} tensors"]
        if self.missing:
            lines.append(f"missing in checkpoint ({len(self.missing)}): {', '.join(self.missing)}")
        if self.unexpected:
            lines.append(f"unexpected in checkpoint ({len(self.unexpected)}): {', '.join(self.unexpected)}")
        for k, cs, ms in self.mismatched:
            lines.append(f"shape mismatch {k}: checkpoint {cs} vs model {ms}")
        if self.kept_fixed:
            lines.append(f"kept the model's fixed sin-cos tables: {', '.join(self.kept_fixed)}")
        return "\n".join(lines)


def unwrap_checkpoint(obj: Any) -> dict[str, torch.Tensor]:
    """A raw state dict from a training checkpoint (prefers EMA weights) without wrapper prefixes."""
    if isinstance(obj, Mapping):
        for key in ("ema", "model", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a state dict (mapping of name -> tensor), got {type(obj).__name__}")
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        for pre in _PREFIXES:
            if k.startswith(pre):
                k = k[len(pre):]
        out[k] = v
    return out


def remap_key(key: str) -> tuple[str, str]:
    """Map one checkpoint key to our name; returns (new_key, layout of the key)."""
    m = _LATTE_BLOCK.match(key)
    if m:
        i, rest = int(m.group(1)), m.group(2)
        kind = "spatial_blocks" if i % 2 == 0 else "temporal_blocks"
        return f"{kind}.{i // 2}.{rest}", "latte"
    m = _FVDM_BLOCK.match(key)
    if m:
        kind = "spatial_blocks" if m.group(1) == "spatial" else "temporal_blocks"
        return f"{kind}.{m.group(2)}.{m.group(3)}", "fvdm"
    return key, ""


def import_latte_state_dict(model: torch.nn.Module, sd: Any, strict: bool = True) -> ImportReport:
    """Copy a Latte / FVDM checkpoint into ``model`` (our Latte) and report what matched.

    ``strict=True`` raises ``ValueError`` naming every missing, unexpected and shape-mismatched key
    before touching the model; ``strict=False`` loads every key that fits and returns the report.
    """
    sd = unwrap_checkpoint(sd)
    ours = model.state_dict()
    layouts = set()
    mapped: dict[str, tuple[str, torch.Tensor]] = {}  # our key -> (checkpoint key, tensor)
    unexpected: list[str] = []
    for k, v in sd.items():
        new, layout = remap_key(k)
        if layout:
            layouts.add(layout)
        if new in ours:
            mapped[new] = (k, v)
        else:
            unexpected.append(k)
    if len(layouts) > 1:
        raise ValueError("checkpoint mixes Latte (blocks.N) and FVDM (blocks_spatial/blocks_temp) block names")
    report = ImportReport(layout=layouts.pop() if layouts else "fvdm-native", unexpected=unexpected)
    to_load: dict[str, torch.Tensor] = {}
    for key, target in ours.items():
        if key not in mapped:
            report.missing.append(key)
            continue
        src_key, v = mapped[key]
        if tuple(v.shape) != tuple(target.shape):
            if key in FIXED_TABLES:
                report.kept_fixed.append(key)
            else:
                report.mismatched.append((src_key, tuple(v.shape), tuple(target.shape)))
            continue
        to_load[key] = v
    if strict and not report.ok:
        raise ValueError(
            "Latte checkpoint does not fit this backbone:\n" + report.summary() + "\n"
            "Fix: build the backbone with the checkpoint's sizes (infer_latte_config(sd) reads them: "
            "hidden_size, depth, patch_size, in_channels, learn_sigma, num_classes, class_dropout>0 for a "
            "null class), or pass strict=False to load the matching part."
        )
    with torch.no_grad():
        for key, v in to_load.items():
            ours[key].copy_(v.to(dtype=ours[key].dtype))
    report.loaded = sorted(to_load)
    return report


def infer_latte_config(sd: Any) -> dict[str, Any]:
    """Read backbone sizes from a Latte / FVDM state dict (num_heads is not stored: pick by hidden_size)."""
    sd = unwrap_checkpoint(sd)
    keys = [remap_key(k)[0] for k in sd]
    w = sd["x_embedder.proj.weight"]  # (D, C, p, p)
    hidden, in_ch, patch = int(w.shape[0]), int(w.shape[1]), int(w.shape[2])
    out_ch = int(sd["final_layer.linear.weight"].shape[0]) // (patch * patch)
    pairs = len({k.split(".")[1] for k in keys if k.startswith("spatial_blocks.")})
    cfg: dict[str, Any] = {
        "hidden_size": hidden,
        "in_channels": in_ch,
        "patch_size": patch,
        "depth": 2 * pairs,
        "learn_sigma": out_ch == 2 * in_ch,
        "num_heads": {384: 6, 768: 12, 1024: 16, 1152: 16}.get(hidden, max(1, hidden // 64)),
    }
    if "pos_embed" in sd:
        cfg["input_size"] = int(round(sd["pos_embed"].shape[1] ** 0.5)) * patch
    if "temp_embed" in sd:
        cfg["num_frames"] = int(sd["temp_embed"].shape[1])
    table = sd.get("y_embedder.embedding_table.weight")
    if table is None:
        cfg["num_classes"] = 0
    else:
        # Latte's table has a null row iff it was trained with label dropout; rows = classes + 1 then.
        cfg["num_classes"] = int(table.shape[0]) - 1
        cfg["class_dropout"] = 0.1
    return cfg
