"""The encoders a pack runs: clips -> latents, captions -> text embeddings, stored float16 in the shards.

Why: fine-tuning a big video model (Wan) spends much of each step in its VAE encoder and its umT5 text
encoder, whose outputs for a fixed clip and caption never change. ``fvdm data pack --autoencoder SPEC
--text-encoder SPEC`` runs them once, and training reads the results instead of running them.

Per sample (beside or instead of the pixels):

* ``KEY.latent.npy`` float16 (f, c, h, w) = ``ae.encode(clip[None])[0]``, the clip in [-1, 1] float32
  exactly as ``video_folder`` yields it (encoded a few clips per call: the same result, faster).
* ``KEY.text.npy`` float16 (n, dim): the caption embedding's own rows, the ones before the zero padding a
  ``TextEncoder`` appends (an all-zero embedding keeps 0 rows), so 512-token umT5 padding is not stored;
  the reader zero-pads back to ``max_length``.

Beside the manifest, ``null_text.npy`` holds the empty prompt's rows once: guidance dropout in training
replaces a clip's text with it.

A SPEC is ``name`` or ``name:PATH`` (PATH fills the plugin's ``path`` or ``pretrained_path`` field) plus
``KEY=VALUE`` parameters parsed as YAML; everything is built and checked (``PackEncoders.check``) before
the pack writes a byte.
"""

from __future__ import annotations

import io
import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from fvdm.core.config import key_value
from fvdm.core.temporal import latent_frame_count, temporal_factor
from fvdm.plugins.datasets.shards import LATENT, NULL_TEXT, TEXT

FLOAT16_MAX = float(np.finfo(np.float16).max)
#: attributes an autoencoder may name its weights by, in order of preference
FINGERPRINT_ATTRS = ("fingerprint", "encoder_id", "weights_id")


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def to_float16(x: torch.Tensor, what: str) -> np.ndarray:
    """float tensor -> float16 array; a value float16 cannot hold is an error, not a silent inf."""
    arr = x.detach().float().cpu().numpy()
    if not np.isfinite(arr).all() or (arr.size and float(np.abs(arr).max()) > FLOAT16_MAX):
        raise ValueError(f"{what} has values beyond float16's range (|x| > {FLOAT16_MAX:g} or not finite); "
                         "check the encoder's dtype and scaling")
    return arr.astype(np.float16)


def own_rows(emb: torch.Tensor) -> torch.Tensor:
    """(L, dim) embedding -> its rows up to the last nonzero one (n, dim): the prompt's own tokens."""
    nonzero = emb.ne(0).any(dim=-1).nonzero()  # (k, 1) indices of rows with any nonzero value
    return emb[: int(nonzero[-1]) + 1 if len(nonzero) else 0]


def _one_line(exc: Exception) -> str:
    """pydantic's multi-line error list -> ``loc: problem; loc: problem``; any other error as its first line."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        msgs = [(".".join(str(p) for p in e["loc"]), e["msg"].removeprefix("Value error, ")) for e in errors()]
        return "; ".join(f"{loc}: {msg}" if loc else msg for loc, msg in msgs)
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def parse_spec(spec: "str | Mapping[str, Any]", params: Sequence[str], registry: Any, what: str) -> dict[str, Any]:
    """``"name"``, ``"name:PATH"`` or a mapping, plus ``KEY=VALUE`` params -> ``{"name": ..., **params}``.

    PATH goes to the plugin's ``path`` field, else its ``pretrained_path`` field; a value is parsed as YAML
    (``max_length=64`` is an int, ``variant=tiny`` a str)."""
    if isinstance(spec, Mapping):
        out = dict(spec)
    else:
        name, sep, path = str(spec).partition(":")
        if not name:
            raise ValueError(f"{what} spec {spec!r} has no name; give NAME or NAME:PATH (e.g. wan_vae:/models/Wan)")
        out = {"name": name}
        if sep:
            fields = getattr(registry.get(name).config, "model_fields", {})
            key = next((k for k in ("path", "pretrained_path") if k in fields), None)
            if key is None:
                raise ValueError(f"{what} {name!r} takes no path (its settings are {sorted(fields) or 'none'}); "
                                 f"give {name} without :PATH")
            out[key] = path
    for item in params:
        parts, value = key_value(item, lambda bad: ValueError(
            f"{what} parameter {bad!r} is not KEY=VALUE; write e.g. variant=tiny"), empty="")
        out[".".join(parts)] = value
    return out


def build_encoder(spec: dict[str, Any], registry: Any, what: str, plugins: Any) -> tuple[Any, dict[str, Any]]:
    """Build a plugin from its spec; returns (object, its full spec: name plus every setting, defaults included)."""
    try:
        entry, cfg = registry.validate(spec)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ValueError(f"{what} {spec.get('name')!r}: {_one_line(exc)}") from None
    full = {"name": entry.name, **(cfg.model_dump(mode="json") if cfg is not None else {})}
    return registry.instantiate(entry, cfg, plugins=plugins), full


class PackEncoders:
    """The autoencoder and/or text encoder of one pack, built and checked before anything is written."""

    def __init__(self, autoencoder: "str | Mapping[str, Any] | None" = None,
                 text_encoder: "str | Mapping[str, Any] | None" = None, *, autoencoder_params: Sequence[str] = (),
                 text_encoder_params: Sequence[str] = (), plugins: Any = None, device: str = "cpu"):
        if plugins is None:
            from fvdm.core.plugins import load_plugins

            plugins = load_plugins()
        self.ae = self.text = None
        self.ae_spec: dict[str, Any] | None = None
        self.text_spec: dict[str, Any] | None = None
        try:
            self.device = torch.device(device)
        except RuntimeError:
            raise ValueError(f"device {device!r} is not a torch device; use e.g. cpu or cuda:0") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device here; use --device cpu")
        if autoencoder is not None:
            reg = plugins["autoencoders"]
            self.ae, self.ae_spec = build_encoder(parse_spec(autoencoder, autoencoder_params, reg, "autoencoder"),
                                                  reg, "autoencoder", plugins)
            if isinstance(self.ae, torch.nn.Module):
                self.ae = self.ae.to(self.device).eval()
        elif autoencoder_params:
            raise ValueError("autoencoder parameters were given without an autoencoder; add --autoencoder NAME")
        if text_encoder is not None:
            reg = plugins["text_encoders"]
            self.text, self.text_spec = build_encoder(parse_spec(text_encoder, text_encoder_params, reg,
                                                                 "text encoder"), reg, "text encoder", plugins)
        elif text_encoder_params:
            raise ValueError("text encoder parameters were given without a text encoder; add --text-encoder NAME")
        self.latent_shape: list[int] | None = None
        self.text_bytes = 0  # caption rows stored so far, for the manifest's bytes per clip

    def check(self, frames: int, channels: int, resolution: int) -> None:
        """Refuse a clip shape the autoencoder cannot encode (frame count, channels, size), naming valid ones."""
        if self.ae is None:
            return
        name = self.ae_spec["name"] if self.ae_spec else ""
        try:
            latent_frame_count(self.ae, frames)
        except ValueError as exc:
            raise ValueError(f"autoencoder {name!r}: {exc}; set --frames accordingly") from None
        want = getattr(self.ae, "in_channels", None)
        if want is not None and int(want) != channels:
            raise ValueError(f"autoencoder {name!r} encodes {want}-channel frames, the clips have {channels}; "
                             f"set --channels {want}")
        if callable(getattr(self.ae, "latent_shape", None)):
            try:
                self.ae.latent_shape(channels, resolution)
            except ValueError as exc:
                raise ValueError(f"autoencoder {name!r}: {exc} (pack clips it takes: --resize, --channels)") from None

    @torch.no_grad()
    def encode(self, clips: list[torch.Tensor], captions: list[str]) -> list[dict[str, bytes]]:
        """Clips (F, C, H, W) float32 in [-1, 1] and their captions -> per clip ``{member ext: npy bytes}``."""
        out: list[dict[str, bytes]] = [{} for _ in clips]
        if self.ae is not None:
            z = self.ae.encode(torch.stack(clips).to(self.device))  # (B, F, C, H, W) -> (B, f, c, h, w)
            for files, zi in zip(out, z):
                if self.latent_shape is None:
                    self.latent_shape = list(zi.shape)
                elif list(zi.shape) != self.latent_shape:
                    raise ValueError(f"autoencoder {self.ae_spec['name']!r} gave a latent of shape {list(zi.shape)} "
                                     f"after {self.latent_shape}; clips must share one shape")
                files[LATENT] = npy_bytes(to_float16(zi, "a latent"))
        if self.text is not None:
            emb = self.text.encode(captions)  # (B, max_length, dim), zero rows past each prompt
            for files, e in zip(out, emb):
                rows = to_float16(own_rows(e), "a caption embedding")  # (n, dim)
                self.text_bytes += rows.nbytes
                files[TEXT] = npy_bytes(rows)
        return out

    def null_text(self) -> bytes:
        """``null_text.npy``: the empty prompt's own rows, float16 (n, dim)."""
        assert self.text is not None
        return npy_bytes(to_float16(own_rows(self.text.encode([""])[0]), "the empty prompt's embedding"))

    def manifest(self, *, clips: int, pixel_shape: list[int] | None) -> dict[str, Any]:
        """The manifest's ``latents``, ``text`` and ``bytes_per_clip`` entries (None where not packed).

        ``pixel_shape`` (F, H, W, C) sizes the uint8 pixels a latent replaces."""
        info: dict[str, Any] = {"latents": None, "text": None, "bytes_per_clip": {}}
        if pixel_shape is not None:
            info["bytes_per_clip"]["pixels_uint8"] = math.prod(pixel_shape)
        if self.ae is not None:
            r, causal = temporal_factor(self.ae)
            fp = next((str(v) for a in FINGERPRINT_ATTRS if (v := getattr(self.ae, a, None))), None)
            info["latents"] = {"autoencoder": self.ae_spec, "fingerprint": fp, "latent_shape": self.latent_shape,
                               "dtype": "float16", "temporal_downsample": r, "causal": causal,
                               "downsample": int(getattr(self.ae, "downsample", 1))}
            if self.latent_shape is not None:
                info["bytes_per_clip"]["latent"] = 2 * math.prod(self.latent_shape)
        if self.text is not None:
            info["text"] = {"text_encoder": self.text_spec, "encoder_id": str(getattr(self.text, "encoder_id", "")),
                            "dim": int(self.text.dim), "max_length": int(self.text.max_length), "dtype": "float16",
                            "null_text": NULL_TEXT}
            info["bytes_per_clip"]["text_mean"] = round(self.text_bytes / clips) if clips else 0
        return info

