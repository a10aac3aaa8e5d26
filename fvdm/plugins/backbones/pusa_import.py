"""Merge Pusa V1's published LoRA into a diffusers ``WanTransformer3DModel`` (fvdm's ``wan`` size wan2.1-t2v-14b).

Pusa V1 (Yaofang Liu et al., github.com/Yaofang-Liu/Pusa-VidGen, folder PusaV1/) fine-tunes
Wan2.1-T2V-14B into a per-frame-timestep model with a rank-512 LoRA trained by DiffSynth-Studio, so
its file uses DiffSynth's Wan DiT names, not diffusers'. Merging it into ``backbone.transformer`` of
fvdm's ``wan`` backbone (size ``wan2.1-t2v-14b``) gives the Pusa weights; fvdm already feeds one
timestep per frame, which is the input Pusa was trained for.

The file, from Pusa's code (facts, see ``PUSA_V1``):
  * ``pusa_v1.pt`` in the Hugging Face repo RaphaelLiu/PusaV1: a flat ``torch.save`` dict (no wrapper)
    written by its trainer from the PEFT-injected DiT's trainable parameters, keys
    ``blocks.{i}.{self_attn,cross_attn}.{q,k,v,o}.lora_{A,B}.default.weight`` and
    ``blocks.{i}.ffn.{0,2}.lora_{A,B}.default.weight`` (PEFT target_modules "q,k,v,o,ffn.0,ffn.2");
    no biases, no ``.alpha`` / ``.diff`` tensors (PEFT's default bias="none"). DiffSynth's own
    "open-source" export of the same LoRA adds ``diffusion_model.`` and drops ``.default``; newer
    DiffSynth trainers may leave ``pipe.dit.``. Both prefixes and both spellings are read.
  * rank 512, trained with lora_alpha 512, so PEFT's alpha / rank = 1 and the file's B @ A is the
    full update. Pusa's inference ``--lora_alpha`` (1.4 in its scripts; README: 1.3-1.5 for Wan2.1)
    is a plain multiplier on B @ A (DiffSynth's loader adds ``alpha * B @ A``, no division by rank):
    here that is ``scale``.

The merge is W <- W + scale * (alpha / rank) * B @ A, in float32, cast back to W's dtype, done only
after ``check_lora`` has passed for every tensor (a refused file changes nothing). ``check_lora``
only reads shapes, so it runs on a 14B model built on the meta device.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, NamedTuple

import torch
from torch import nn

from fvdm.core.hashing import sha256_file
from fvdm.plugins.backbones.wan_sizes import WAN_SIZES


class PusaRelease(NamedTuple):
    """Where a published Pusa LoRA lives and how it was trained (from Pusa's README, train.sh, inference scripts)."""

    hf_repo: str  # Hugging Face repo holding the file
    file: str  # its name there
    code: str  # the public code that trained and loads it
    base: str  # the base model the LoRA adapts (Wan's original format)
    base_diffusers: str  # the same base in diffusers format (what fvdm's ``wan`` loads)
    fvdm_size: str  # the ``wan`` backbone size with those shapes
    rank: int
    alpha: float  # training lora_alpha: alpha / rank = 1
    pusa_scale: float  # Pusa's inference --lora_alpha default (a multiplier on B @ A): ``scale`` here
    targets: tuple[str, ...]  # DiffSynth module names adapted in every block


PUSA_V1 = PusaRelease(
    hf_repo="RaphaelLiu/PusaV1", file="pusa_v1.pt", code="github.com/Yaofang-Liu/Pusa-VidGen (PusaV1/)",
    base="Wan-AI/Wan2.1-T2V-14B", base_diffusers="Wan-AI/Wan2.1-T2V-14B-Diffusers", fvdm_size="wan2.1-t2v-14b",
    rank=512, alpha=512.0, pusa_scale=1.4,
    targets=("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
             "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2"),
)

#: Prefixes a DiffSynth Wan LoRA's keys may carry: its open-source export, its newer trainers' module path.
PREFIXES = ("diffusion_model.", "pipe.dit.")

# DiffSynth's Wan DiT (diffsynth/models/wan_video_dit.py) -> diffusers' WanTransformer3DModel, for every
# linear layer a LoRA can adapt. Per block: DiffSynth's self_attn / cross_attn are diffusers' attn1 /
# attn2, its output projection o is diffusers' to_out.0 (a ModuleList with dropout at 1), and its
# ffn Sequential(Linear, GELU, Linear) is diffusers' FeedForward (net.0 = GELU module with .proj, net.2).
_BLOCK = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2",
}
# Outside the blocks: Sequential(Linear, act, Linear) embedders, Sequential(SiLU, Linear) time projection, head.
_TOP = {
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")
# a LoRA tensor: <module>.lora_A|lora_B[.<PEFT adapter name>].weight; the adapter name is "default" in PEFT
_LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<part>lora_A|lora_B)(?:\.(?P<adapter>[A-Za-z_]\w*))?\.weight$")
# the original Wan / ComfyUI / musubi layout: <module>.lora_down|lora_up.weight and <module>.alpha (a scalar)
_ORIGINAL_KEY = re.compile(r"^(?P<module>.+)\.(?:(?P<part>lora_down|lora_up)\.weight|(?P<alpha>alpha))$")


def diffsynth_to_diffusers(key: str) -> str:
    """A DiffSynth Wan DiT name -> the diffusers ``WanTransformer3DModel`` name it stands for.

    A LoRA key gives the weight it adapts (``diffusion_model.blocks.3.self_attn.q.lora_A.default.weight``
    -> ``blocks.3.attn1.to_q.weight``); module paths and parameter names map as themselves
    (``blocks.3.self_attn.o`` -> ``blocks.3.attn1.to_out.0``, ``blocks.3.ffn.0.bias`` ->
    ``blocks.3.ffn.net.0.proj.bias``). Only linear layers (what a LoRA adapts).
    """
    lora = _LORA_KEY.match(_strip_prefix(key))
    if lora:
        return diffsynth_to_diffusers(lora.group("module")) + ".weight"
    module, dot, leaf = _strip_prefix(key).rpartition(".")
    if leaf not in ("weight", "bias"):
        module, dot, leaf = _strip_prefix(key), "", ""
    m = _BLOCK_KEY.match(module)
    if m and m.group(2) in _BLOCK:
        mapped = f"blocks.{m.group(1)}.{_BLOCK[m.group(2)]}"
    elif module in _TOP:
        mapped = _TOP[module]
    else:
        raise ValueError(f"{key!r} is not a linear layer of DiffSynth's Wan DiT (blocks.N.{{self_attn,cross_attn}}."
                         f"{{q,k,v,o}}, blocks.N.ffn.{{0,2}}, {', '.join(_TOP)}); is this a Wan2.1 T2V LoRA?")
    return mapped + dot + leaf


def _strip_prefix(key: str) -> str:
    for prefix in PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def lora_file(path: str | Path) -> Path:
    """``path``, or for a directory (what ``fvdm export --adapter`` writes, in either layout) the LoRA file in it.

    A directory without one is refused here: the not-found hint below is about downloading Pusa's file, which
    would mislead someone who pointed at an export directory.
    """
    from fvdm.core.lora import LORA_FILE

    path = Path(path).expanduser()
    if not path.is_dir():
        return path
    for name in (LORA_FILE, COMFYUI_FILE):
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"LoRA directory {path} holds no LoRA file ({LORA_FILE} or {COMFYUI_FILE}, what "
                            "`fvdm export --adapter` writes); point backbone.lora at the LoRA file itself")


def recorded_base_fingerprint(path: str | Path) -> str | None:
    """The base fingerprint a LoRA file records (fvdm's exports, both layouts, in the safetensors metadata), or
    None for files that record none (Pusa's .pt, other tools' files)."""
    from fvdm.core.lora import FVDM_FINGERPRINT

    path = lora_file(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get(FVDM_FINGERPRINT)
    except (SafetensorError, OSError):
        return None  # read_lora says what is wrong with the file


def read_lora(path: str | Path) -> dict[str, torch.Tensor]:
    """A LoRA file (``.safetensors``, or ``.pt`` / ``.pth`` pickles) -> {key: tensor} with known prefixes stripped.

    Never downloads. Pickles load with ``weights_only=True`` (tensors only, no code runs) and memory-mapped,
    so a multi-GB file is not copied into RAM before the merge reads it.
    """
    path = lora_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file {path} not found; fvdm never downloads: `huggingface-cli download "
                                f"{PUSA_V1.hf_repo} {PUSA_V1.file} --local-dir DIR` and pass DIR/{PUSA_V1.file}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw = load_file(str(path))
    elif path.suffix in (".pt", ".pth"):
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    else:
        raise ValueError(f"LoRA file {path}: unknown format {path.suffix!r}; expected .safetensors, .pt or .pth")
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in raw.items()):
        raise ValueError(f"LoRA file {path} is not a flat {{name: tensor}} state dict "
                         f"(got {type(raw).__name__}); export the LoRA tensors alone")
    out: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        name = _strip_prefix(key)
        if name in out:
            raise ValueError(f"LoRA file {path}: {key!r} and another key both read as {name!r}; keep one spelling")
        out[name] = value
    return out


class LoraTarget(NamedTuple):
    """One adapted weight: the diffusers parameter, the LoRA's own module name, its down (A) and up (B) tensors."""

    param: str  # diffusers parameter name, e.g. blocks.0.attn1.to_q.weight
    module: str  # DiffSynth module name, e.g. blocks.0.self_attn.q
    down: torch.Tensor  # lora_A (rank, in)
    up: torch.Tensor  # lora_B (out, rank)
    alpha: float | None = None  # the file's own alpha for this module (original Wan layout), else None


def _pairs(lora: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{DiffSynth module: {"lora_A": A, "lora_B": B}}; refuses keys that are not DiffSynth LoRA weights."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    stray: list[str] = []
    original: set[str] = set()  # modules in the original layout: only they may carry an alpha
    alphas: dict[str, str] = {}
    for key, tensor in lora.items():
        m = _LORA_KEY.match(_strip_prefix(key)) or _ORIGINAL_KEY.match(_strip_prefix(key))
        if m is None:
            stray.append(key)
            continue
        if m.re is _ORIGINAL_KEY and m.group("alpha"):
            alphas[m.group("module")] = key
        elif m.re is _ORIGINAL_KEY:
            original.add(m.group("module"))
        part = "alpha" if m.groupdict().get("alpha") else {"lora_down": "lora_A", "lora_up": "lora_B"}.get(
            m.group("part"), m.group("part"))
        slot = pairs.setdefault(m.group("module"), {})
        if part in slot:
            raise ValueError(f"LoRA: two {part} tensors for {m.group('module')} (one is {key!r}); "
                             "keep one adapter's tensors")
        slot[part] = tensor
    stray += [key for module, key in alphas.items() if module not in original]  # an alpha beside PEFT names
    if stray:
        # .diff / .diff_b come from other trainers; neither Pusa V1 nor the original Wan layout writes them
        raise ValueError(f"LoRA: {len(stray)} keys are not <module>.lora_A/lora_B[.default].weight or "
                         f"<module>.lora_down/lora_up.weight + .alpha, e.g. {stray[0]!r}; only DiffSynth/PEFT (as in "
                         f"{PUSA_V1.file}) and original Wan / ComfyUI LoRA weights are supported")
    if not pairs:
        raise ValueError("LoRA: no lora_A/lora_B tensors; is this a LoRA file?")
    for module, slot in pairs.items():
        if set(slot) - {"alpha"} != {"lora_A", "lora_B"}:
            have, lack = (("lora_A", "lora_B") if "lora_A" in slot else ("lora_B", "lora_A"))
            raise ValueError(f"LoRA: {module} has {have} but no {lack}; the file is truncated or not a LoRA")
    return pairs


def _fitting_base(pairs: Mapping[str, Mapping[str, torch.Tensor]]) -> str:
    """Which Wan the LoRA's shapes fit: width of the self-attention input and number of blocks."""
    widths = {slot["lora_A"].shape[-1] for module, slot in pairs.items() if module.endswith(".self_attn.q")}
    blocks = {int(m.group(1)) for m in map(_BLOCK_KEY.match, pairs) if m}
    if len(widths) != 1 or not blocks:
        return "another Wan"
    width, layers = widths.pop(), max(blocks) + 1
    names = [name for name, s in WAN_SIZES.items() if s.dim == width and s.layers == layers]
    return f"a Wan of width {width} with {layers} blocks ({', '.join(names) or 'no fvdm size'})"


def check_lora(transformer: nn.Module, lora: Mapping[str, torch.Tensor]) -> tuple[list[LoraTarget], int]:
    """Validate a DiffSynth Wan LoRA against a diffusers model without touching it -> (targets, rank).

    Reads names and shapes only (works on the meta device). Refuses: keys that are not LoRA weights,
    unpaired A/B, modules with no diffusers counterpart, targets the model lacks, A/B that are not
    (rank, in) / (out, rank) of the weight, and ranks that differ between modules.
    """
    pairs = _pairs(lora)
    params = dict(transformer.named_parameters())
    unknown, targets = [], []
    for module, slot in pairs.items():
        try:
            targets.append(LoraTarget(diffsynth_to_diffusers(module) + ".weight", module, slot["lora_A"],
                                      slot["lora_B"], float(slot["alpha"]) if "alpha" in slot else None))
        except ValueError:
            unknown.append(module)
    if unknown:
        raise ValueError(f"LoRA: {len(unknown)} modules are not DiffSynth Wan DiT linears, e.g. {unknown[0]!r}; "
                         "this is not a Wan DiT LoRA (or it targets modules fvdm does not map)")
    missing = [t.param for t in targets if t.param not in params]
    if missing:
        hint = ("; pass backbone.transformer (the diffusers model), not the fvdm backbone"
                if f"transformer.{missing[0]}" in params else
                f"; it is for {_fitting_base(pairs)}, load the matching base")
        raise ValueError(f"LoRA for another base: {len(missing)} targets missing from this model, "
                         f"e.g. {missing[0]}{hint}")
    ranks = set()
    for t in targets:
        weight = params[t.param]
        if t.down.ndim != 2 or t.up.ndim != 2 or t.down.shape[0] != t.up.shape[1]:
            raise ValueError(f"LoRA {t.module}: lora_A {tuple(t.down.shape)} and lora_B {tuple(t.up.shape)} are "
                             "not (rank, in) and (out, rank) matrices of one rank; the file is damaged")
        if (t.up.shape[0], t.down.shape[1]) != tuple(weight.shape):
            raise ValueError(f"LoRA {t.module}: (out, in) = {(t.up.shape[0], t.down.shape[1])} but {t.param} is "
                             f"{tuple(weight.shape)}; the file is for {_fitting_base(pairs)}, load the matching base")
        ranks.add(t.down.shape[0])
    if len(ranks) != 1:
        raise ValueError(f"LoRA: modules have different ranks {sorted(ranks)}; one alpha / rank cannot scale them, "
                         "merge each rank's tensors separately")
    return targets, ranks.pop()


@torch.no_grad()
def merge_lora(transformer: nn.Module, lora: Mapping[str, torch.Tensor], *, alpha: float | None = None,
               scale: float = 1.0) -> list[str]:
    """W += scale * (alpha / rank) * B @ A for every LoRA target, in place -> the adapted parameter names.

    ``alpha`` None = the rank (alpha / rank = 1, as Pusa V1 was trained: lora_alpha = rank = 512).
    ``scale`` is Pusa's inference ``--lora_alpha`` (its scripts use 1.4). Nothing changes unless
    ``check_lora`` passes for every tensor. The product is taken in float32 on the weight's device.
    """
    targets, rank = check_lora(transformer, lora)
    params = dict(transformer.named_parameters())
    for t in targets:
        # a file's own per-module alpha (original Wan layout) wins; else the caller's, else alpha = rank
        factor = scale * (t.alpha if t.alpha is not None else rank if alpha is None else alpha) / rank
        weight = params[t.param]
        down = t.down.to(weight.device, torch.float32)  # (rank, in)
        up = t.up.to(weight.device, torch.float32)  # (out, rank)
        weight.copy_((weight.float() + factor * (up @ down)).to(weight.dtype))  # (out, in)
    return [t.param for t in targets]


def load_pusa_lora(transformer: nn.Module, path: str | Path, *, scale: float = 1.0) -> dict:
    """Read Pusa V1's LoRA file and merge it into ``transformer`` (a diffusers WanTransformer3DModel).

    Pass ``backbone.transformer`` of a ``wan`` backbone of size ``wan2.1-t2v-14b`` loaded from
    Wan-AI/Wan2.1-T2V-14B-Diffusers. ``scale`` multiplies B @ A (Pusa's ``--lora_alpha``;
    ``PUSA_V1.pusa_scale`` = 1.4 is what its scripts use). Returns provenance: file, sha256, rank,
    alpha, scale, number of adapted weights.
    """
    lora = read_lora(path)
    return lora_report(path, lora, merge_lora(transformer, lora, scale=scale), scale)


def lora_report(path: str | Path, lora: Mapping[str, torch.Tensor], adapted: list[str], scale: float) -> dict:
    """Provenance of a merged LoRA: file, sha256, rank, alpha, scale, number of adapted weights."""
    path = Path(path).expanduser()
    rank = next(t for k, t in lora.items() if ".lora_A" in k or ".lora_down" in k).shape[0]
    alphas = {float(t) for k, t in lora.items() if k.endswith(".alpha")}  # the original layout's own alpha
    alpha = alphas.pop() if len(alphas) == 1 else float(rank) if not alphas else "per module"
    return {"file": str(path), "sha256": sha256_file(path), "rank": rank, "alpha": alpha, "scale": scale,
            "adapted": len(adapted)}


# -- the original Wan layout (ComfyUI, musubi-tuner) ---------------------------------------------------------
#: the ComfyUI / original-Wan LoRA file ``fvdm export --adapter --format comfyui`` writes
COMFYUI_FILE = "wan_lora_comfyui.safetensors"
_ORIGINAL_BLOCK = {v: k for k, v in _BLOCK.items()}
_ORIGINAL_TOP = {v: k for k, v in _TOP.items()}


def diffusers_to_original(module: str) -> str:
    """A diffusers ``WanTransformer3DModel`` linear layer -> its name in the original Wan code (and DiffSynth's):
    ``blocks.3.attn1.to_q`` -> ``blocks.3.self_attn.q``; the inverse of ``diffsynth_to_diffusers``."""
    m = _BLOCK_KEY.match(module)
    if m and m.group(2) in _ORIGINAL_BLOCK:
        return f"blocks.{m.group(1)}.{_ORIGINAL_BLOCK[m.group(2)]}"
    if module in _ORIGINAL_TOP:
        return _ORIGINAL_TOP[module]
    raise ValueError(f"{module!r} has no name in the original Wan layout (blocks.N.attn1/attn2.to_q/k/v/out.0, "
                     f"blocks.N.ffn.net.0.proj/net.2, {', '.join(_ORIGINAL_TOP)}); adapt only those layers")


def to_original_wan_lora(model: nn.Module) -> dict[str, torch.Tensor]:
    """A Wan-family model's LoRA adapter in the original Wan key layout ComfyUI and musubi-tuner read:
    ``diffusion_model.<module>.lora_down.weight`` (A, (rank, in)), ``.lora_up.weight`` (B, (out, rank)) and
    ``.alpha`` (a scalar: the update is alpha / rank * up @ down, as fvdm trained it)."""
    from fvdm.core.lora import DIFFUSERS_PREFIX, lora_settings, to_diffusers_lora

    alpha = torch.tensor(float(lora_settings(model).lora_alpha()))
    out: dict[str, torch.Tensor] = {}
    for key, tensor in to_diffusers_lora(model).items():  # transformer.<module>.lora_A|lora_B.weight
        module, part = key[len(DIFFUSERS_PREFIX) + 1:].rsplit(".", 2)[:2]
        name = f"diffusion_model.{diffusers_to_original(module)}"
        out[f"{name}.{'lora_down' if part == 'lora_A' else 'lora_up'}.weight"] = tensor
        out[f"{name}.alpha"] = alpha.clone()
    return out
