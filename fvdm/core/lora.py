"""LoRA adapters on fvdm backbones: inject and freeze, save and load the adapter, fingerprint the base, merge,
and diffusers' Wan LoRA file format.

Fine-tuning a pretrained video model into an FVDM model (per-frame timesteps) can train the whole
network or only low-rank updates W + (alpha / rank) B A of chosen linear layers (Pusa V1 adapts
q, k, v, o and the FFN of every block of Wan2.1-14B). The adapters are peft's own LoRA layers,
injected with ``peft.inject_adapter_in_model`` (adapter name ``"default"``) into ``lora_root(model)``:
the wrapped diffusers ``WanTransformer3DModel`` of a Wan-family backbone, so module names are
diffusers' names and a file in diffusers' LoRA format is the same tensors under other keys; the
model itself for fvdm's own backbones.

What the other modules need from here:
  * ``add_lora`` checks every target before anything changes, injects, and freezes all but the LoRA
    tensors; ``adapter_state_dict`` / ``load_adapter_state`` are the trained part (keys as in
    ``model.state_dict()``: ``transformer.blocks.0.attn1.to_q.lora_A.default.weight``);
  * ``base_fingerprint`` names the base weights an adapter belongs to, so an adapter is never applied
    to another base silently;
  * ``merge_lora`` folds the adapters into the base (plain base keys again: export, sampling);
  * ``save_diffusers_lora`` / ``load_diffusers_lora``: ``pytorch_lora_weights.safetensors`` as
    diffusers' ``WanLoraLoaderMixin.save_lora_weights`` writes it (``WanPipeline.load_lora_weights``
    and ``WanTransformer3DModel.load_lora_adapter`` read it; tests/test_lora.py holds the outputs equal).

How alpha travels in that file: diffusers loads Wan LoRAs with ``network_alphas=None``; the scale comes
from the safetensors metadata entry ``lora_adapter_metadata``, a JSON object of ``LoraConfig`` keywords
prefixed by the component (``"transformer.r"``, ``"transformer.lora_alpha"``, ...), which
``load_lora_adapter`` passes to ``LoraConfig`` (a file without it is read as alpha = rank). fvdm writes
that entry, plus ``fvdm_lora_settings`` (``LoraSettings`` JSON) and ``fvdm_base_fingerprint``.
A reader that ignores metadata (not diffusers) gets scale 1 instead of alpha / rank: keep alpha = rank
(the default) for such readers.
"""

from __future__ import annotations

import hashlib
import json
import re
import weakref
from pathlib import Path
from typing import Any, Mapping

import torch
from pydantic import Field, field_validator
from torch import nn

from fvdm.core.errors import FvdmError
from fvdm.core.interfaces import PluginConfig

#: Wan/diffusers linear layers Pusa V1 adapts in every block: q, k, v, o of self- (attn1) and cross-attention
#: (attn2), and both FFN layers (peft matches a target as a name suffix, so "to_q" is attn1.to_q and attn2.to_q).
WAN_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2")
#: fvdm's ``unet_video``: the q/k/v and output projections of its spatial and temporal attention, and the FiLM
#: layers through which each frame's own level scales and shifts every residual block. Its convolutions stay
#: frozen: fvdm adapts linear layers only (the layers diffusers' Wan LoRA format covers).
UNET_VIDEO_TARGETS = ("qkv", "proj", "film")
#: peft's adapter name; diffusers' file format drops it from the keys
ADAPTER = "default"
#: the component prefix of diffusers' Wan LoRA keys and metadata (WanLoraLoaderMixin.transformer_name)
DIFFUSERS_PREFIX = "transformer"
#: diffusers' LORA_WEIGHT_NAME_SAFE and LORA_ADAPTER_METADATA_KEY
LORA_FILE = "pytorch_lora_weights.safetensors"
DIFFUSERS_METADATA = "lora_adapter_metadata"
FVDM_SETTINGS = "fvdm_lora_settings"
FVDM_FINGERPRINT = "fvdm_base_fingerprint"
#: suffixes listed in a bad-target message
SHOWN = 10

_DIFFUSERS_KEY = re.compile(rf"^{DIFFUSERS_PREFIX}\.(.+)\.(lora_[AB])\.weight$")
_PEFT_KEY = re.compile(rf"^(.+)\.(lora_[AB])\.{ADAPTER}\.weight$")


class LoraError(FvdmError, ValueError):
    """A LoRA target, adapter state or LoRA file does not fit the model; the message says which and the fix."""


class LoraSettings(PluginConfig):
    """Which linear layers get a LoRA update W + (alpha / rank) B A, and its size (``train.lora``)."""

    rank: int = Field(16, ge=1, description="rank r of the update B A")
    alpha: float | None = Field(None, gt=0, description="lora_alpha; the update is scaled by alpha / rank "
                                                        "(None = rank: scale 1)")
    target_modules: list[str] = Field(default_factory=lambda: list(WAN_TARGETS), min_length=1,
                                      description="linear layers to adapt, as name suffixes (peft's matching); "
                                                  "default: Wan's q, k, v, o and FFN (unet_video: qkv, proj, film)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA branch's input while training")

    @field_validator("target_modules")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if not t or t != t.strip(".").strip()]
        if bad:
            raise ValueError(f"target {bad[0]!r} is not a module name suffix; write e.g. 'to_q' or 'ffn.net.2'")
        return v

    def lora_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)


# -- where adapters go -------------------------------------------------------------------------------

def is_wan_family(model: nn.Module) -> bool:
    """fvdm's Wan-family backbones (wan, skyreels_v2_df): a diffusers ``transformer`` and a ``diffusers_class``."""
    return hasattr(model, "diffusers_class") and isinstance(getattr(model, "transformer", None), nn.Module)


def lora_root(model: nn.Module) -> nn.Module:
    """The module adapters are injected into: ``model.transformer`` (diffusers' names) for Wan-family backbones."""
    return model.transformer if is_wan_family(model) else model


def _prefix(model: nn.Module) -> str:
    """The root's key prefix in ``model.state_dict()``."""
    return "transformer." if is_wan_family(model) else ""


def _what(model: nn.Module) -> str:
    return getattr(model, "name", None) or type(model).__name__


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)  # peft's rule for a list of target_modules


def linear_suffixes(root: nn.Module) -> list[str]:
    """Short names of the root's linear layers, valid as targets: the last name part (two when it is an index)."""
    out: list[str] = []
    for name, m in root.named_modules():
        if isinstance(m, nn.Linear):
            parts = name.split(".")
            short = ".".join(parts[-2:] if parts[-1].isdigit() else parts[-1:])
            if short not in out:
                out.append(short)
    return out


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The injected peft LoRA layers, by name relative to ``lora_root(model)``."""
    from peft.tuners.lora import LoraLayer

    return {n: m for n, m in lora_root(model).named_modules() if isinstance(m, LoraLayer)}


def has_lora(model: nn.Module) -> bool:
    return bool(lora_layers(model))


def _planned(model: nn.Module, targets: list[str]) -> dict[str, nn.Linear]:
    """The linear layers ``targets`` select (name relative to the root); a target that selects none, or selects
    a module that is not linear, raises before anything changes."""
    root, what = lora_root(model), _what(model)
    modules = dict(root.named_modules())
    chosen: dict[str, nn.Linear] = {}
    for target in targets:
        hits = [n for n in modules if n and _matches(n, target)]
        other = [n for n in hits if not isinstance(modules[n], nn.Linear)]
        if not hits or other:
            names = linear_suffixes(root)
            have = ", ".join(names[:SHOWN]) + (f", ... ({len(names) - SHOWN} more)" if len(names) > SHOWN else "")
            found = (f"matches {type(modules[other[0]]).__name__} {other[0]!r}, not a linear layer," if other
                     else "matches no linear layer")
            raise LoraError(f"LoRA target {target!r} {found} of {what}; it has: {have}; use those names in "
                            "target_modules")
        chosen.update((n, modules[n]) for n in hits)
    return dict(sorted(chosen.items()))


def add_lora(model: nn.Module, settings: LoraSettings) -> list[str]:
    """Inject LoRA layers (B = 0: the output is unchanged) into ``lora_root(model)``, freeze every other
    parameter; returns the adapted module names (relative to the root: diffusers' names for Wan)."""
    from peft import LoraConfig, inject_adapter_in_model

    if has_lora(model):
        raise LoraError(f"{_what(model)} already has LoRA layers; merge_lora(model) first or add them once")
    chosen = _planned(model, settings.target_modules)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.lora_alpha(), target_modules=list(settings.target_modules),
                        lora_dropout=settings.dropout, init_lora_weights=True)
    inject_adapter_in_model(config, lora_root(model), adapter_name=ADAPTER)
    for name, p in model.named_parameters():
        p.requires_grad_(is_lora_key(name))
    adapted = sorted(lora_layers(model))
    assert adapted == list(chosen), "peft adapted the layers _planned selected"
    return adapted


def lora_settings(model: nn.Module) -> LoraSettings:
    """The settings of the injected adapter (from peft's config on the root)."""
    config = getattr(lora_root(model), "peft_config", {}).get(ADAPTER)
    if config is None or not has_lora(model):
        raise LoraError(f"{_what(model)} has no LoRA adapter {ADAPTER!r}; add_lora(model, settings) first")
    return LoraSettings(rank=config.r, alpha=float(config.lora_alpha), target_modules=sorted(config.target_modules),
                        dropout=config.lora_dropout)


# -- the adapter's tensors ---------------------------------------------------------------------------

def is_lora_key(name: str) -> bool:
    """A state-dict key (or parameter name) of a LoRA tensor (peft names them lora_A, lora_B, ...)."""
    return any(part.startswith("lora_") for part in name.split("."))


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA tensors, keys as in ``model.state_dict()``."""
    return {k: v for k, v in model.state_dict().items() if is_lora_key(k)}


def _check_keys(want: Mapping[str, tuple[int, ...]], got: Mapping[str, tuple[int, ...]], source: str,
                what: str) -> None:
    """Exactly ``want``'s keys and shapes in ``got``, else one line naming the difference."""
    missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or unexpected:
        raise LoraError(f"{source} does not fit the LoRA layers of {what}: {len(missing)} missing "
                        f"({', '.join(missing[:3])}), {len(unexpected)} unexpected ({', '.join(unexpected[:3])}); "
                        "use the adapter trained with these target_modules")
    wrong = [k for k in want if tuple(got[k]) != tuple(want[k])]
    if wrong:
        k = wrong[0]
        raise LoraError(f"{source}: {k} has shape {tuple(got[k])}, the model's is {tuple(want[k])} (and "
                        f"{len(wrong) - 1} more): another rank or base size; use the adapter's own settings and base")


def load_adapter_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "adapter state") -> None:
    """Copy ``state`` (keys as ``adapter_state_dict``) into the model's LoRA layers, strictly."""
    want = {k: tuple(v.shape) for k, v in adapter_state_dict(model).items()}
    if not want:
        raise LoraError(f"{_what(model)} has no LoRA layers to load {source} into; add_lora(model, settings) first")
    _check_keys(want, {k: tuple(v.shape) for k, v in state.items()}, source, _what(model))
    result = model.load_state_dict(dict(state), strict=False)
    assert not result.unexpected_keys, "every key was checked to be a LoRA key of the model"


#: per-process memo of base fingerprints: (the hashed tensors as (name, weak reference, version, address),
#: digest). An entry holds only while every tensor it names is alive, unchanged (its version counter) and in
#: place, so a rebuilt or edited base is hashed again; ``fvdm export --adapter`` hashed one base three times.
#: An edit through ``.data`` bumps no version counter and is invisible here: whatever edits that way (peft's
#: merge, in ``merge_lora``) calls ``forget_fingerprints``.
_FINGERPRINTS: list[tuple[list[tuple[str, Any, int, int]], str]] = []


def forget_fingerprints() -> None:
    """Drop the memo of ``base_fingerprint``: call after changing weights through ``.data``."""
    _FINGERPRINTS.clear()


def base_fingerprint(model: nn.Module) -> str:
    """Hex sha256 over every non-LoRA tensor of ``model.state_dict()``: name, dtype, shape, bytes.

    Names are taken as before injection (peft's ``.base_layer`` dropped), so a base has one fingerprint with
    or without adapters, and a LoRA tensor never changes it; a cast to another dtype does. It hashes every
    weight byte: milliseconds for the tiny test models, about a minute per 30 GB (minutes for Wan2.1-14B),
    once per process for a base whose tensors have not changed since (``_FINGERPRINTS``).
    """
    state = {k.replace(".base_layer.", "."): v for k, v in model.state_dict(keep_vars=True).items()
             if not is_lora_key(k)}
    key = [(name, weakref.ref(state[name]), state[name]._version, state[name].data_ptr()) for name in sorted(state)]
    for seen, digest in _FINGERPRINTS:
        if len(seen) == len(key) and all(a[0] == b[0] and a[1]() is not None and a[1]() is b[1]() and a[2:] == b[2:]
                                         for a, b in zip(seen, key)):
            return digest
    digest = hash_tensors(state)
    _FINGERPRINTS[:] = [*_FINGERPRINTS[-3:], (key, digest)]
    return digest


def hash_tensors(state: dict[str, torch.Tensor]) -> str:
    """Hex sha256 of tensors in name order: name, dtype, shape and every byte."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_base(model: nn.Module, expected: str | None, source: str) -> str:
    """The base's fingerprint, which must be ``expected`` (what a LoRA checkpoint recorded): adapters belong to
    exactly one base, and a changed pretrained directory or init_from would silently pair them with another."""
    found = base_fingerprint(model)
    if found != expected:
        raise LoraError(f"{source} holds LoRA adapters of base {str(expected)[:12]}, but the base read now is "
                        f"{found[:12]}: the pretrained directory or init_from changed since training; restore it")
    return found


def merge_lora(model: nn.Module) -> None:
    """Fold every adapter into its base weight (W += (alpha / rank) B A, peft's merge) and put the base linear
    layer back, in place: ``model.state_dict()`` has the plain base keys again. Parameters stay frozen."""
    root = lora_root(model)
    layers = lora_layers(model)
    if not layers:
        raise LoraError(f"{_what(model)} has no LoRA layers to merge; export or sample it as it is")
    for name, layer in layers.items():
        layer.merge(adapter_names=[ADAPTER])
        parent, _, child = name.rpartition(".")
        setattr(root.get_submodule(parent) if parent else root, child, layer.get_base_layer())
    root.__dict__.pop("peft_config", None)  # what peft's injection left on the root: a later add_lora starts clean
    forget_fingerprints()  # peft merged through .data, which the memo's version check cannot see


# -- diffusers' Wan LoRA file ------------------------------------------------------------------------

def _require_wan(model: nn.Module, what: str) -> None:
    if not is_wan_family(model):
        raise LoraError(f"{what} is diffusers' Wan format; {_what(model)} is an fvdm backbone: use "
                        "adapter_state_dict / load_adapter_state (fvdm export --adapter writes adapter.safetensors)")


def to_diffusers_lora(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter in diffusers' keys: ``transformer.<module>.lora_A.weight``, ``lora_B.weight`` (no ``.default``)."""
    _require_wan(model, "to_diffusers_lora")
    out = {}
    for k, v in lora_root(model).state_dict().items():
        if is_lora_key(k):
            m = _PEFT_KEY.match(k)
            if m is None:
                raise LoraError(f"LoRA tensor {k!r} has no place in diffusers' format (lora_A/lora_B weights of "
                                f"adapter {ADAPTER!r} only); add adapters with add_lora")
            out[f"{DIFFUSERS_PREFIX}.{m.group(1)}.{m.group(2)}.weight"] = v.detach().contiguous()
    if not out:
        raise LoraError(f"{_what(model)} has no LoRA layers; add_lora(model, settings) before saving an adapter")
    return out


def diffusers_lora_config(settings: LoraSettings) -> dict[str, Any]:
    """The ``LoraConfig`` keywords diffusers rebuilds the adapter from (those it infers for a file without
    metadata, ``get_peft_kwargs``, and the dropout), prefixed by the component as ``save_lora_weights`` packs them."""
    config = {"r": settings.rank, "lora_alpha": settings.lora_alpha(), "target_modules": list(settings.target_modules),
              "lora_dropout": settings.dropout, "rank_pattern": {}, "alpha_pattern": {}, "use_dora": False,
              "lora_bias": False}
    return {f"{DIFFUSERS_PREFIX}.{k}": v for k, v in config.items()}


def save_diffusers_lora(model: nn.Module, directory: str | Path) -> Path:
    """Write ``directory/pytorch_lora_weights.safetensors`` as diffusers' ``save_lora_weights`` does, with the base
    fingerprint and fvdm's settings in the metadata; returns the file."""
    from safetensors.torch import save_file

    tensors = to_diffusers_lora(model)
    settings = lora_settings(model)
    metadata = {"format": "pt",
                DIFFUSERS_METADATA: json.dumps(diffusers_lora_config(settings), indent=2, sort_keys=True),
                FVDM_SETTINGS: settings.model_dump_json(), FVDM_FINGERPRINT: base_fingerprint(model)}
    path = Path(directory).expanduser() / LORA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def _file_settings(path: Path, metadata: Mapping[str, str], shapes: Mapping[str, tuple[int, ...]]) -> LoraSettings:
    """The adapter's settings: fvdm's metadata, else diffusers' (r, lora_alpha, target_modules), else the tensors
    (rank from lora_B, alpha = rank: how diffusers reads a file without metadata, every adapted module by name)."""
    if FVDM_SETTINGS in metadata:
        return LoraSettings.model_validate_json(metadata[FVDM_SETTINGS])
    ranks = {shape[1] for key, shape in shapes.items() if key.endswith(".lora_B.weight")}
    if not ranks:
        raise LoraError(f"{path} holds no lora_B weights; it is not a whole LoRA adapter: write it again")
    config = {k.removeprefix(f"{DIFFUSERS_PREFIX}."): v
              for k, v in json.loads(metadata.get(DIFFUSERS_METADATA) or "{}").items()}
    if config.get("rank_pattern") or config.get("alpha_pattern") or len(ranks) > 1:
        raise LoraError(f"{path} gives its modules different ranks or alphas ({sorted(ranks)}); fvdm adapters have "
                        "one rank and alpha: retrain or merge it with diffusers")
    if config:
        return LoraSettings(rank=config["r"], alpha=config["lora_alpha"], target_modules=list(config["target_modules"]),
                            dropout=config.get("lora_dropout", 0.0))
    modules = sorted({_DIFFUSERS_KEY.match(k).group(1) for k in shapes})
    return LoraSettings(rank=ranks.pop(), target_modules=modules)


def load_diffusers_lora(model: nn.Module, path: str | Path) -> list[str]:
    """Read a diffusers Wan LoRA file (or a directory holding ``pytorch_lora_weights.safetensors``) into an fvdm
    Wan-family model: adds the file's adapter (or fills the model's own, of the same rank and alpha); returns
    the adapted module names. A file naming another base, or whose tensors do not fit, changes nothing."""
    from safetensors import SafetensorError, safe_open

    _require_wan(model, "load_diffusers_lora")
    path = Path(path).expanduser()
    file = path / LORA_FILE if path.is_dir() else path
    if not file.is_file():
        raise LoraError(f"no LoRA file {file}; give the {LORA_FILE} that save_diffusers_lora (fvdm export --adapter) "
                        "wrote, or its directory")
    try:
        with safe_open(str(file), framework="pt") as f:
            metadata = f.metadata() or {}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise LoraError(f"{file} is not a readable safetensors file ({str(exc).splitlines()[0]}); write it "
                        "again") from exc
    foreign = [k for k in shapes if not _DIFFUSERS_KEY.match(k)]
    if foreign or not shapes:
        found = f"key {foreign[0]!r}" if foreign else "no tensors"
        raise LoraError(f"{file} is not a diffusers Wan transformer LoRA ({found}; want {DIFFUSERS_PREFIX}.<module>"
                        ".lora_A.weight / lora_B.weight); convert it to diffusers' format first")
    trained_on = metadata.get(FVDM_FINGERPRINT)
    if trained_on is not None and trained_on != (ours := base_fingerprint(model)):
        raise LoraError(f"{file} was trained on another base (fingerprint {trained_on[:12]}, this model's "
                        f"{ours[:12]}); load the base weights it was trained on (backbone.pretrained) first")
    settings = _file_settings(file, metadata, shapes)
    if has_lora(model):
        own = lora_settings(model)
        if (own.rank, own.lora_alpha()) != (settings.rank, settings.lora_alpha()):
            raise LoraError(f"{file} has rank {settings.rank}, alpha {settings.lora_alpha()}; the model's LoRA has "
                            f"rank {own.rank}, alpha {own.lora_alpha()}: load it into a model without adapters")
        layers = lora_layers(model)
    else:
        layers = _planned(model, settings.target_modules)
    want = {}
    for name, layer in layers.items():
        want[f"{DIFFUSERS_PREFIX}.{name}.lora_A.weight"] = (settings.rank, layer.in_features)
        want[f"{DIFFUSERS_PREFIX}.{name}.lora_B.weight"] = (layer.out_features, settings.rank)
    _check_keys(want, shapes, str(file), _what(model))  # every check above runs before the model changes
    with safe_open(str(file), framework="pt") as f:
        state = {}
        for k in f.keys():
            module, ab = _DIFFUSERS_KEY.match(k).groups()
            state[f"{_prefix(model)}{module}.{ab}.{ADAPTER}.weight"] = f.get_tensor(k)
    adapted = sorted(lora_layers(model)) if has_lora(model) else add_lora(model, settings)
    load_adapter_state(model, state, str(file))
    return adapted
