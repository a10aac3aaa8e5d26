"""`fvdm export CHECKPOINT --out DIR [--merged | --adapter] [--no-ema] [--overwrite]`: weights other tools read.

--merged (the default for a checkpoint without LoRA layers): the whole network, adapters folded in.
  * Wan-family backbones: DIR/transformer, a diffusers-format directory (``save_pretrained``, safetensors)
    that ``WanTransformer3DModel.from_pretrained(DIR, subfolder="transformer")`` loads and fvdm reads back
    as ``backbone: {name: wan, size: ..., pretrained: DIR}``; DIR/fvdm_export.json records the spec and source.
  * fvdm's own backbones: DIR/config.json ({"backbone": name, "spec": the spec that reads DIR back,
    "source": checkpoint path and sha256}) and DIR/model.safetensors (exactly ``model.state_dict()``), the
    directory ``fvdm.core.build.read_pretrained`` reads.
--adapter (the default for a LoRA checkpoint): the adapter alone, for the base it was trained on.
  * Wan-family: DIR/pytorch_lora_weights.safetensors in diffusers' LoRA format (``WanPipeline.load_lora_weights``
    reads it; ``fvdm.core.lora.save_diffusers_lora``);
  * fvdm's own: DIR/adapter.safetensors (keys as in ``model.state_dict()``, for ``load_adapter_state``);
  * both: DIR/adapter_config.json with the LoRA settings, the base fingerprint, spec and source.

The EMA weights are exported unless --no-ema. Everything is written into a temporary directory next to DIR
and renamed into place, so a failed export leaves nothing; an existing non-empty DIR is refused unless
--overwrite.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from fvdm.core.atomic import staged_directory

#: spec keys a merged export has already applied (a Pusa LoRA merged when the base was read): reading the
#: export back must not merge it again
APPLIED_KEYS = ("lora", "lora_scale")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a checkpoint's weights as a diffusers/fvdm directory or a LoRA file",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint file (runs/NAME/checkpoints/last.pt) or run directory")
    p.add_argument("--out", required=True, help="output directory (created; must be absent or empty)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--merged", dest="kind", action="store_const", const="merged",
                      help="the whole network, LoRA folded in (default without LoRA layers)")
    kind.add_argument("--adapter", dest="kind", action="store_const", const="adapter",
                      help="the LoRA adapter alone (default for a LoRA checkpoint)")
    p.add_argument("--format", choices=("diffusers", "comfyui"), default="diffusers",
                   help="a Wan adapter's key layout: diffusers (pytorch_lora_weights.safetensors, WanPipeline."
                        "load_lora_weights) or comfyui (the original Wan layout: diffusion_model.blocks.N.self_attn.q."
                        "lora_down/lora_up + alpha, read by ComfyUI, musubi-tuner and diffusers' converter)")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=_run)


# -- the directory ---------------------------------------------------------------------------------

def check_out(out: str | Path, overwrite: bool) -> Path:
    """The output directory, refused (one line) when it is a file, or non-empty without ``overwrite``."""
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"--out {out} exists and is not empty; choose another directory or pass --overwrite")
    return out


def publish(out: str | Path, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Run ``write(tmp)`` into a staged directory that then replaces ``out`` (``fvdm.core.atomic``): a failure at
    any point leaves the old directory or the new one."""
    out = check_out(out, overwrite)
    with staged_directory(out) as tmp:
        write(tmp)
    return out


def _json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _save_safetensors(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    # own contiguous copies: safetensors refuses views and tensors that share storage
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(path), metadata=metadata)


# -- the two kinds of export -----------------------------------------------------------------------

def export_merged(model: nn.Module, out: str | Path, *, spec: dict[str, Any], source: dict[str, Any] | None = None,
                  overwrite: bool = False) -> Path:
    """Write ``model``'s whole network (LoRA layers folded in first, in place) to ``out``; returns the directory.

    ``spec``: the backbone spec it was built from (a checkpoint's ``model_info``); the written spec names ``out``
    as ``pretrained``, so ``build_model(plugins, spec, load_pretrained=True)`` reads these weights back.
    """
    from fvdm.core.lora import has_lora, is_wan_family, merge_lora

    final = check_out(out, overwrite)  # before the model changes
    if has_lora(model):
        merge_lora(model)
    readback = {**{k: v for k, v in spec.items() if k not in APPLIED_KEYS}, "pretrained": str(final)}
    record = {"backbone": spec["name"], "spec": readback, "source": source}

    def write(tmp: Path) -> None:
        if is_wan_family(model):
            model.transformer.save_pretrained(str(tmp / "transformer"), safe_serialization=True)
            _json(tmp / "fvdm_export.json", {"kind": "merged", **record})
        else:
            _json(tmp / "config.json", record)
            _save_safetensors(model.state_dict(), tmp / "model.safetensors")

    return publish(final, write, overwrite=overwrite)


def export_adapter(model: nn.Module, out: str | Path, *, spec: dict[str, Any], source: dict[str, Any] | None = None,
                   overwrite: bool = False, layout: str = "diffusers") -> Path:
    """Write ``model``'s LoRA adapter alone to ``out`` (for Wan-family backbones diffusers' format, or with
    ``layout="comfyui"`` the original Wan layout); returns it."""
    from fvdm.core.lora import (
        FVDM_FINGERPRINT, FVDM_SETTINGS, LORA_FILE, adapter_state_dict, base_fingerprint, has_lora, is_wan_family,
        lora_settings, save_diffusers_lora,
    )

    if not has_lora(model):
        raise ValueError(f"backbone {spec['name']!r} has no LoRA layers: --adapter exports a LoRA fine-tune; "
                         "export this model with --merged")
    settings, fingerprint = lora_settings(model), base_fingerprint(model)

    if layout == "comfyui" and not is_wan_family(model):
        raise ValueError(f"--format comfyui writes Wan LoRAs; backbone {spec['name']!r} is not a Wan model (use the "
                         "default format)")

    def write(tmp: Path) -> None:
        if layout == "comfyui":
            from fvdm.plugins.backbones.pusa_import import COMFYUI_FILE, to_original_wan_lora

            weights = COMFYUI_FILE
            metadata = {"format": "pt", FVDM_SETTINGS: settings.model_dump_json(), FVDM_FINGERPRINT: fingerprint}
            _save_safetensors(to_original_wan_lora(model), tmp / weights, metadata)
        elif is_wan_family(model):
            weights = save_diffusers_lora(model, tmp).name
        else:
            weights = "adapter.safetensors"
            metadata = {"format": "pt", FVDM_SETTINGS: settings.model_dump_json(), FVDM_FINGERPRINT: fingerprint}
            _save_safetensors(adapter_state_dict(model), tmp / weights, metadata)
        _json(tmp / "adapter_config.json", {
            "kind": "adapter", "backbone": spec["name"], "spec": spec, "lora": settings.model_dump(mode="json"),
            "base_fingerprint": fingerprint, "weights": weights, "source": source,
            "format": {LORA_FILE: "diffusers Wan LoRA (WanPipeline.load_lora_weights)",
                       "adapter.safetensors": "fvdm adapter state (fvdm.core.lora.load_adapter_state)"}.get(
                weights, "original Wan / ComfyUI LoRA (lora_down, lora_up, alpha)")})

    return publish(out, write, overwrite=overwrite)


# -- the command -----------------------------------------------------------------------------------

def checkpoint_file(path: str | Path) -> Path:
    """The file ``load_checkpoint`` reads for ``path`` (a run directory means its checkpoints/last.pt)."""
    path = Path(path).expanduser()
    return (path / "checkpoints" / "last.pt" if path.is_dir() else path).resolve()


def _run(args: argparse.Namespace) -> int:
    from fvdm.core.hashing import sha256_file
    from fvdm.core.loaded import load_for_sampling
    from fvdm.core.lora import has_lora
    from fvdm.core.plugins import load_plugins

    out = check_out(args.out, args.overwrite)  # before the (possibly long) load
    loaded = load_for_sampling(args.checkpoint, load_plugins(), use_ema=not args.no_ema)
    file = checkpoint_file(args.checkpoint)
    # the spec the model was built from; load_for_sampling has verified the file, and a memory-mapped read of
    # this one small entry costs nothing next to loading the weights a second time
    spec = dict(torch.load(file, map_location="cpu", weights_only=True, mmap=True)["model_info"])
    source = {"checkpoint": str(file), "sha256": sha256_file(file), "step": loaded.step,
              "weights": "ema" if loaded.used_ema else "model"}
    kind = args.kind or ("adapter" if has_lora(loaded.model) else "merged")
    export = export_adapter if kind == "adapter" else export_merged
    if args.format != "diffusers" and kind != "adapter":
        raise ValueError(f"--format {args.format} is a LoRA layout: use it with --adapter (a LoRA checkpoint)")
    extra = {"layout": args.format} if kind == "adapter" else {}
    written = export(loaded.model, out, spec=spec, source=source, overwrite=args.overwrite, **extra)
    print(f"fvdm export: {kind} {spec['name']} weights ({source['weights']}, step {loaded.step}) -> {written}")
    return 0
