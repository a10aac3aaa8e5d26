"""A model ready to sample: from a checkpoint (``load_for_sampling``) or from a config naming pretrained
weights (``load_from_config``), with what a sampler needs to know about it (``LoadedModel``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fvdm.core.build import build_model, build_plugin, frame_size, model_frames, set_attention
from fvdm.core.checkpoint import load_checkpoint, load_state_strict
from fvdm.core.config import parse_config
from fvdm.core.sampling_context import sample_dtype


@dataclass
class LoadedModel:
    """A trained model ready to sample, with what a sampler needs to know about it.

    ``channels``/``resolution`` describe the data (pixel) space; ``latent_channels``/
    ``latent_resolution`` the space the backbone works in (equal for the identity
    autoencoder). Sample noise of shape (B, F, latent_channels, latent_resolution,
    latent_resolution), then ``autoencoder.decode``.
    """

    model: torch.nn.Module
    schedule: Any
    autoencoder: Any
    config: Any  # ExperimentConfig
    num_frames: int
    channels: int
    resolution: int
    num_classes: int
    latent_channels: int
    latent_resolution: int
    step: int = 0
    path: str = ""
    used_ema: bool = True
    max_frames: int = 0  # the backbone's frame capacity (>= num_frames, the trained clip length)
    pixel_frames: int = 0  # pixel frames of a clip (num_frames is the model's: fewer under a temporal VAE)
    height: int = 0  # pixel frame size (H, W); resolution x resolution unless the data is non-square
    width: int = 0
    latent_height: int = 0
    latent_width: int = 0
    conditioning: frozenset[str] = frozenset()  # what the backbone consumes: "class", "text"
    dtype: torch.dtype = torch.float32  # the backbone's weights and forward (sample.dtype); the sampler stays float32
    _text_encoder: Any = None

    def text_encoder(self, plugins: Any) -> Any:
        """The config's ``text_encoder``, built on first use (a model sampled without prompts never loads it)."""
        if self._text_encoder is None:
            if "text" not in self.conditioning:
                raise ValueError(f"{self.config.backbone.name!r} is not text-conditioned; drop --prompt/"
                                 "--negative-prompt (it takes " + (", ".join(sorted(self.conditioning)) or "nothing")
                                 + ")")
            if self.config.text_encoder is None:
                raise ValueError("a prompt needs a text encoder: add `text_encoder: {name: umt5, path: DIR}` to the "
                                 "config (DIR: the model's diffusers download, with tokenizer/ and text_encoder/)")
            encoder = build_plugin(plugins, "text_encoders", self.config.text_encoder.spec(), "text_encoder")
            want = getattr(self.model, "text_dim", None)
            if want is not None and int(encoder.dim) != int(want):
                raise ValueError(f"text encoder {encoder.encoder_id} gives {encoder.dim}-wide embeddings but the "
                                 f"backbone reads {want}: use the text encoder the model was trained with")
            self._text_encoder = encoder
        return self._text_encoder


def load_for_sampling(path: str | Path, plugins: Any, *, use_ema: bool = True,
                      device: str | torch.device = "cpu", dtype: str | None = None) -> LoadedModel:
    """Rebuild the model from the config stored in a checkpoint and load (EMA) weights, eval mode.

    ``dtype`` (fp32, bf16, fp16; None: the config's ``sample.dtype``): the weights are cast to it once loaded."""
    ckpt = load_checkpoint(path)
    cfg = parse_config(json.loads(ckpt["config"]), source=f"{path} (stored config)")
    want = sample_dtype(dtype or cfg.sample.dtype)
    schedule = build_plugin(plugins, "noise_schedules", cfg.noise_schedule.spec(), "noise_schedule")
    autoencoder = build_plugin(plugins, "autoencoders", cfg.autoencoder.spec(), "autoencoder")
    info = dict(ckpt["data_info"])
    weights = ckpt["ema"] if use_ema else ckpt["model"]
    if cfg.train.lora is None:
        model = build_model(plugins, dict(ckpt["model_info"]), check_against=None)  # never re-reads `pretrained`
        load_state_strict(model, weights, "EMA" if use_ema else "model", path)
    else:
        model = lora_model(plugins, ckpt, cfg, weights, path)
    return _ready(model, schedule, autoencoder, cfg, plugins, info, dict(ckpt["model_info"]), device, want,
                  step=int(ckpt["step"]), path=str(path), used_ema=use_ema)


def lora_model(plugins: Any, ckpt: dict[str, Any], cfg: Any, adapters: dict[str, torch.Tensor],
               path: str | Path) -> torch.nn.Module:
    """A LoRA checkpoint holds only its adapters: read the base again (``pretrained`` or ``train.init_from``),
    check it is the base they were trained on, then add them."""
    from fvdm.core.init_from import init_weights
    from fvdm.core.lora import add_lora, check_base, load_adapter_state

    spec = dict(ckpt["model_info"])
    model = build_model(plugins, spec, check_against=None, load_pretrained=True)
    if cfg.train.init_from is not None:
        init_weights(model, cfg.train.init_from, spec, weights=cfg.train.init_weights)
    check_base(model.float(), (ckpt.get("started_from") or {}).get("lora_base_fingerprint"), str(path))
    add_lora(model, cfg.train.lora)
    load_adapter_state(model, adapters, source=str(path))
    return model


def load_from_config(cfg: Any, plugins: Any, *, device: str | torch.device = "cpu",
                     dtype: str | None = None) -> LoadedModel:
    """A model to sample straight from a config, no training run: ``backbone.pretrained`` names its weights.

    The data's shapes size the backbone as training would (``data: {name: shape_only, ...}`` declares a
    clip shape without any data). A config without ``pretrained`` would sample random weights: refused.
    ``dtype`` as in ``load_for_sampling``; a backbone that reads its shards in a dtype (Wan) reads them in it.
    """
    from fvdm.core.build import build_components

    want = sample_dtype(dtype or cfg.sample.dtype)
    if not cfg.backbone.params.get("pretrained"):
        raise ValueError(f"config backbone {cfg.backbone.name!r} names no weights: add `pretrained: DIR` to sample it "
                         "without a run, or sample a checkpoint (--checkpoint runs/NAME/checkpoints/last.pt)")
    parts = build_components(cfg, plugins, load_pretrained=True, dtype=None if want == torch.float32 else want)
    return _ready(parts.model, parts.schedule, parts.autoencoder, cfg, plugins, parts.info, parts.spec, device, want,
                  step=0, path=str(cfg.backbone.params["pretrained"]), used_ema=False)


def cast_for_sampling(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """The backbone's weights in ``dtype`` (half precision): its own ``cast`` when it has one (Wan keeps the
    modules diffusers keeps in float32), else ``model.to(dtype)``. float32 leaves the model as loaded."""
    if dtype == torch.float32:
        return model
    return model.cast(dtype) if callable(getattr(model, "cast", None)) else model.to(dtype)


def _ready(model: torch.nn.Module, schedule: Any, autoencoder: Any, cfg: Any, plugins: Any, info: dict[str, Any],
           spec: dict[str, Any], device: str | torch.device, dtype: torch.dtype = torch.float32,
           **where: Any) -> LoadedModel:
    """Eval mode on ``device`` in ``dtype`` with the configured attention kernel, and what a sampler needs to know."""
    model = cast_for_sampling(model.to(device), dtype).eval().requires_grad_(False)  # the model it returns
    set_attention(model, cfg, plugins, torch.device(device), dtype)  # the run's configured kernel
    if hasattr(autoencoder, "to"):
        autoencoder.to(device)
    entry = plugins["backbones"].get(spec["name"])
    frames = model_frames(info)
    capacity = getattr(model, "num_frames", frames)
    (h, w), (lh, lw) = frame_size(info), frame_size(info, latent=True)
    return LoadedModel(
        model=model, schedule=schedule, autoencoder=autoencoder, config=cfg,
        num_frames=frames, channels=int(info["channels"]), resolution=int(info["resolution"]),
        num_classes=int(spec.get("num_classes", info.get("num_classes", 0)) or 0),
        latent_channels=int(info["latent_channels"]), latent_resolution=int(info["latent_resolution"]),
        max_frames=int(frames if capacity is None else capacity), pixel_frames=int(info["num_frames"]),
        height=h, width=w, latent_height=lh, latent_width=lw,
        conditioning=frozenset(getattr(entry.config, "conditioning", frozenset())), dtype=dtype, **where,
    )
