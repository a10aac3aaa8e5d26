"""Per-frame modulation for diffusers' Wan-family transformers (Wan2.1/2.2, SkyReels-V2): the one algorithm.

fvdm gives every frame its own level, so a Wan-family backbone receives timesteps t (B, F). The
wrapped diffusers model (``self.transformer``) keeps every submodule and parameter name, so
diffusers-format state dicts and LoRA adapters load into it unchanged. Its forward is replaced by
``FrameModulatedWan.forward`` below, which calls the same submodules in the same order and with the
same dtype casts (patch embedding, rope, condition embedder, each block's norms / self-attention /
cross-attention / FFN, norm_out, proj_out); what changes is how timesteps become modulation:

* the condition embedder runs once per (clip, frame): t (B, F) -> temb (B, F, D) and its six-way
  projection (B, F, 6, D), where diffusers' per-token path (Wan2.2 TI2V) runs it on B*F*N rows;
* each block adds its ``scale_shift_table`` to the (B, F, 6, D) projection and the result is
  broadcast over the N = H/2 * W/2 tokens of each frame (tokens viewed as (B, F, N, D); no copy).

Why the blocks' own forward is not called: ``WanTransformerBlock.forward`` takes per-token
modulation only as one (B, S, 6, D) tensor over the flat token axis S = F*N (and SkyReels' block as
(B, 6, S, D)). A per-frame broadcast inside a flat S axis is not a strided view (a token's offset
would have to be 0 within a frame and 6D across frames), so feeding it costs a B*S*6*D copy (1.2 GB
in float32 per clip at Wan2.1-1.3B's 81x480x832 shapes), and the block then builds another
(B, S, 6, D) sum per block that autograd keeps alive through the gate views (about 36 GB per clip
over 30 blocks in training). ``frame_modulated_block`` is therefore the block's modulation glue
written once over (B, F, N, D) views, every elementwise op in diffusers' order; attention, rope,
qk-norm, cross-attention and FFN are the block's own modules. tests/test_backbone_wan.py holds it
to diffusers' own forward (scalar, per-token, diffusion-forcing paths) at 1e-10 in float64, so a
diffusers release that changes the block fails there, not silently.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

import torch
from einops import rearrange, repeat
from torch import nn
from pydantic import Field
from torch.utils.checkpoint import checkpoint

from fvdm.core.interfaces import BackboneConfig
from fvdm.core.tensor import check_video
from fvdm.plugins.backbones.wan_sizes import WanSize

#: Both model classes (and the per-token/diffusion-forcing paths the oracles compare against) exist from here.
MIN_DIFFUSERS = "0.35.0"


class WanFamilyConfig(BackboneConfig):
    """The fields every Wan-family backbone shares; a subclass adds ``size`` (one row of its table) and its own."""

    conditioning: ClassVar[frozenset[str]] = frozenset({"text"})

    in_channels: int | None = Field(None, ge=1, description="latent channels (the build fills it); must be the "
                                                            "size's (its VAE's: 16, 48 for wan2.2-ti2v-5b) except "
                                                            "for the random-init sizes (small, tiny)")
    input_size: int | None = Field(None, ge=2, description="nominal latent size (the build fills it); any H, W "
                                                           "divisible by 2 run")
    num_frames: int | None = Field(None, ge=1, description="latent frames of the training clips (the build fills "
                                                           "it); rope allows up to rope_max_seq_len")
    num_classes: int = Field(0, ge=0, description="must be 0: text-conditioned")
    learn_sigma: bool = Field(False, description="must be false: a flow velocity is predicted")
    text_dropout: float = Field(0.1, ge=0, lt=1, description="training: share of clips whose text is replaced by "
                                                             "the empty prompt's embeddings (classifier-free guidance)")
    missing_text: Literal["zeros", "error"] = Field(
        "zeros", description="no encoder_hidden_states: zeros = one all-zero text token; error = refuse")
    subfolder: str | None = Field("transformer", description="subfolder of `pretrained` holding config.json")
    lora: str | None = Field(None, description="a LoRA file merged into the pretrained weights when they are read "
                                               "(Pusa V1's pusa_v1.pt: DiffSynth-Studio key names); needs pretrained")
    lora_scale: float = Field(1.0, description="multiplier of the LoRA update (1 = as trained; Pusa's scripts "
                                               "use 1.4)")
    gradient_checkpointing: bool = False

    def guidance_dropout(self) -> dict[str, float]:
        return {"text": self.text_dropout}


def diffusers_available(**_ctx: Any) -> tuple[bool, str]:
    """(ok, reason): diffusers importable at a version with both Wan-family models."""
    try:
        import diffusers
        from packaging.version import Version
    except Exception as exc:  # ImportError, or a broken install
        return False, f"diffusers is not importable ({type(exc).__name__}: {exc}); pip install 'fvdm[latent]'"
    if Version(diffusers.__version__).release < Version(MIN_DIFFUSERS).release:
        return False, (f"diffusers {diffusers.__version__} lacks the Wan/SkyReels-V2 models; "
                       f"pip install 'diffusers>={MIN_DIFFUSERS}'")
    return True, ""


def require_diffusers(name: str) -> None:
    ok, why = diffusers_available()
    if not ok:
        raise ImportError(f"{name}: {why}")


def frame_modulated_block(block: nn.Module, x: torch.Tensor, context: torch.Tensor, proj: torch.Tensor,
                          rotary_emb: Any, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """One diffusers Wan/SkyReels block with per-frame modulation.

    x (B, S, D) tokens, S = F*N frame-major; context (B, L, D) projected text; proj (B, F, 6, D) the
    condition embedder's per-frame projection. Same arithmetic as the block's own forward with
    per-token modulation, in the same order and dtypes (float32 modulation, ``type_as`` casts).
    """
    frames = proj.shape[1]
    mod = block.scale_shift_table.unsqueeze(0) + proj.float()  # (1, 1, 6, D) + (B, F, 6, D) -> (B, F, 6, D)
    # six (B, F, 1, D) views: each broadcasts over the N tokens of its frame
    shift, scale, gate, c_shift, c_scale, c_gate = rearrange(mod, "b f six d -> six b f 1 d")

    def by_frame(a: torch.Tensor) -> torch.Tensor:
        return rearrange(a, "b (f n) d -> b f n d", f=frames)

    def flat(a: torch.Tensor) -> torch.Tensor:
        return rearrange(a, "b f n d -> b (f n) d")

    # 1. self-attention (rope; SkyReels' block-causal mask when given)
    h = flat(by_frame(block.norm1(x.float())) * (1 + scale) + shift).type_as(x)
    out = block.attn1(h, None, attention_mask, rotary_emb)
    x = flat(by_frame(x.float()) + by_frame(out) * gate).type_as(x)
    # 2. cross-attention to the text (not modulated)
    h = block.norm2(x.float()).type_as(x)
    x = x + block.attn2(h, context, None, None)
    # 3. feed-forward
    h = flat(by_frame(block.norm3(x.float())) * (1 + c_scale) + c_shift).type_as(x)
    out = block.ffn(h)
    return flat(by_frame(x.float()) + by_frame(out.float()) * c_gate).type_as(x)


class FrameModulatedWan(nn.Module):
    """Base of the ``wan`` and ``skyreels_v2_df`` backbones: fvdm layout, per-frame modulation, the wrapped model.

    Subclasses set ``self.transformer`` (the diffusers model), ``self.size`` (a ``WanSize``),
    ``self.cfg`` and implement ``time_embedding`` (and optionally ``attention_mask``).
    """

    transformer: nn.Module
    size: WanSize
    name: str = "wan"

    def _init_common(self, cfg: Any, size: WanSize, sizes: dict[str, WanSize] | None = None) -> None:
        """``sizes``: the family's whole size table, so a directory of another size is named by its fvdm size."""
        self.cfg, self.size, self.sizes = cfg, size, dict(sizes or {})
        self.in_channels = self.out_channels = size.channels if cfg.in_channels is None else cfg.in_channels
        self.num_frames, self.input_size, self.num_classes = cfg.num_frames, cfg.input_size, 0
        self.learn_sigma = False
        self.text_dim = size.text_dim  # width of the encoder_hidden_states it reads (a text encoder must match)
        self.gradient_checkpointing = cfg.gradient_checkpointing

    # -- the family-specific part ------------------------------------------------------------------
    def time_embedding(self, t: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """t (B, F), context (B, L, text_dim) -> temb (B, F, D), proj (B, F, 6, D), projected context (B, L, D)."""
        raise NotImplementedError

    def attention_mask(self, frames: int, grid: tuple[int, int], device: torch.device) -> torch.Tensor | None:
        return None

    # -- boundary ----------------------------------------------------------------------------------
    def check_inputs(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None,
                     context: torch.Tensor | None) -> None:
        check_video(x, "x", channels=self.in_channels)
        B, F, _, H, W = x.shape
        pt, ph, pw = self.size.patch
        if F % pt or H % ph or W % pw:
            raise ValueError(f"{self.name}: x (B, F, C, H, W) = {tuple(x.shape)} does not fit patch size "
                             f"{self.size.patch} (F % {pt}, H % {ph}, W % {pw} must be 0); crop or pad the latents")
        longest = max(F // pt, H // ph, W // pw)
        if longest > self.size.rope_max_seq_len:
            raise ValueError(f"{self.name}: {longest} patches along one axis exceed rope_max_seq_len="
                             f"{self.size.rope_max_seq_len}; use fewer frames or a smaller resolution")
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (B, F):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{self.name}: t must be per-frame (B, F) = {(B, F)}, got {shape}; "
                             f"one level per clip is t[:, None].expand({B}, {F})")
        if not t.is_floating_point():
            raise TypeError(f"{self.name}: t must be float model timesteps in [0, 1000] (schedule.timestep_input), "
                            f"got {t.dtype}")
        if y is not None:
            raise ValueError(f"{self.name} is text-conditioned: pass encoder_hidden_states=(B, L, "
                             f"{self.size.text_dim}), not class labels y")
        if context is not None and (context.ndim != 3 or context.shape[0] != B
                                    or context.shape[2] != self.size.text_dim):
            raise ValueError(f"{self.name}: encoder_hidden_states must be (B, L, text_dim) = ({B}, L, "
                             f"{self.size.text_dim}), got {tuple(context.shape)}")

    def text_context(self, context: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """The text embeddings, or (policy ``missing_text: zeros``) one all-zero token per clip.

        One zero token equals any number of them under attention (identical keys and values), and
        zero rows are what Wan's pipeline pads umT5 embeddings to 512 tokens with.
        """
        if context is not None:
            return context
        if self.cfg.missing_text == "error":
            raise ValueError(f"{self.name}: encoder_hidden_states (B, L, {self.size.text_dim}) is required "
                             "(missing_text: error); pass umT5 embeddings or set missing_text: zeros")
        return x.new_zeros(x.shape[0], 1, self.size.text_dim)

    # -- forward -----------------------------------------------------------------------------------
    def _block(self, block: nn.Module, h: torch.Tensor, context: torch.Tensor, proj: torch.Tensor,
               rotary_emb: Any, mask: torch.Tensor | None) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(frame_modulated_block, block, h, context, proj, rotary_emb, mask, use_reentrant=False)
        return frame_modulated_block(block, h, context, proj, rotary_emb, mask)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, *,
                encoder_hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, F, C, H, W) latents, t (B, F) model timesteps in [0, 1000] -> flow velocity (B, F, C, H, W).

        ``encoder_hidden_states`` (B, L, text_dim): umT5-XXL embeddings of the prompt (Wan pads to L=512);
        None follows ``missing_text``. ``y`` must be None (text, not classes, conditions Wan).
        """
        self.check_inputs(x, t, y, encoder_hidden_states)
        m = self.transformer
        B, F, _, H, W = x.shape
        pt, ph, pw = self.size.patch
        gh, gw = H // ph, W // pw
        video = rearrange(x, "b f c h w -> b c f h w")  # diffusers' layout
        rotary_emb = m.rope(video)  # (cos, sin), each (1, S, 1, head_dim)
        # contiguous as diffusers makes it before its block loop (same memory layout, same kernels)
        tokens = rearrange(m.patch_embedding(video), "b d f h w -> b (f h w) d").contiguous()  # (B, S, D)
        temb, proj, context = self.time_embedding(t, self.text_context(encoder_hidden_states, x))
        mask = self.attention_mask(F // pt, (gh, gw), x.device)
        for block in m.blocks:
            tokens = self._block(block, tokens, context, proj, rotary_emb, mask)
        # output adaLN: shift and scale per frame (B, F, 1, D), broadcast over the frame's tokens
        shift, scale = rearrange(m.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2), "b f two d -> two b f 1 d")
        normed = rearrange(m.norm_out(tokens.float()), "b (f n) d -> b f n d", f=F // pt)
        tokens = rearrange(normed * (1 + scale) + shift, "b f n d -> b (f n) d").type_as(tokens)
        out = m.proj_out(tokens)  # (B, S, pt*ph*pw*C): diffusers orders a patch's outputs (pt, ph, pw, c)
        return rearrange(out, "b (f gh gw) (pt ph pw c) -> b (f pt) c (gh ph) (gw pw)",
                         f=F // pt, gh=gh, gw=gw, pt=pt, ph=ph, pw=pw)

    def num_params(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # -- pretrained weights ------------------------------------------------------------------------
    #: the diffusers class name a directory's config.json must name, and extra config keys it must match
    diffusers_class: str = "WanTransformer3DModel"

    def config_must_match(self) -> dict[str, Any]:
        """The directory's config.json keys this size fixes (its architecture)."""
        return diffusers_kwargs(self.size, self.in_channels)

    def load_pretrained(self, directory: str, dtype: torch.dtype | None = None) -> dict[str, Any]:
        """Read a local diffusers-format directory (``pretrained``) into ``self.transformer``; provenance back.

        Every check runs before a weight is copied: the folder and its config.json exist, the config is
        this size's architecture, every shard the index names is there and holds its keys, and the keys
        and shapes are exactly the model's. fvdm never downloads. A transformer built empty (on the meta
        device, ``make_transformer`` under ``weights_follow``) takes the tensors read as its weights; one
        built with random values has them overwritten. ``dtype``: the weights' dtype after loading, as
        ``cast`` gives it (None: float32); without a LoRA each tensor is read straight into it.
        """
        from fvdm.core.pretrained import check_config, directory_fingerprint, read_config, read_state_dict

        public = (f"{self.size.repo}, subfolder {self.cfg.subfolder}" if self.size.repo else
                  f"a diffusers {self.diffusers_class} directory")
        what = f"{self.name} size {self.cfg.size!r}"
        folder = Path(directory).expanduser() / (self.cfg.subfolder or "")
        config = read_config(directory, self.cfg.subfolder, public_copy=public, what=what)
        known = {name: {"_class_name": self.diffusers_class, **diffusers_kwargs(row, row.channels)}
                 for name, row in self.sizes.items() if name != self.cfg.size}
        check_config(config, {"_class_name": self.diffusers_class, **self.config_must_match()}, path=folder,
                     public_copy=public, what=what, known=known)
        expected = {k: tuple(v.shape) for k, v in self.transformer.state_dict().items()}
        # a LoRA is merged in float32 and the result cast once; without one each tensor is read in its final dtype
        final = self.weight_dtypes(dtype or torch.float32)
        reading = {k: torch.float32 for k in expected} if self.cfg.lora is not None else final
        empty = any(p.is_meta for p in self.transformer.parameters())
        # assigned tensors become the weights: each read into memory of its own, not left mapped to the shard
        state = read_state_dict(folder, expected=expected, public_copy=public, what=what, dtype=reading, copy=empty)
        lora = None
        own_format = self.cfg.lora is not None and is_diffusers_lora(self.cfg.lora)
        if self.cfg.lora is not None and not own_format:  # checked against the base before any weight changes
            from fvdm.plugins.backbones.pusa_import import check_lora, read_lora

            try:
                lora = read_lora(self.cfg.lora)
                check_lora(self.transformer, lora)
            except (ValueError, FileNotFoundError) as exc:
                raise type(exc)(f"backbone.lora {self.cfg.lora}: {exc}") from exc
        # assign: the tensors read become the parameters (no second copy); requires_grad stays the model's
        self.transformer.load_state_dict(state, strict=True, assign=empty)
        del state
        info = {"directory": str(Path(directory).expanduser().resolve()), "subfolder": self.cfg.subfolder,
                "fingerprint": directory_fingerprint(folder), "public_copy": public}
        # fvdm's exports (either layout) record their base: checked on the float32 base before anything merges
        base = self._check_lora_base(self.cfg.lora) if self.cfg.lora is not None else None
        if own_format:  # fvdm's own export (diffusers' layout)
            info["lora"] = self._merge_diffusers_lora(self.cfg.lora, self.cfg.lora_scale)
        elif lora is not None:
            from fvdm.plugins.backbones.pusa_import import lora_file, lora_report, merge_lora

            adapted = merge_lora(self.transformer, lora, scale=self.cfg.lora_scale)
            info["lora"] = lora_report(lora_file(self.cfg.lora), lora, adapted, self.cfg.lora_scale)
        if base is not None:
            info["lora"]["base_fingerprint"] = base
        self.cast(dtype or torch.float32)
        return info

    def weight_dtypes(self, dtype: torch.dtype) -> dict[str, torch.dtype]:
        """Each state-dict key's dtype when the model runs in ``dtype``: float32 for the modules diffusers keeps in
        float32 under any ``torch_dtype`` (its class's ``_keep_in_fp32_modules``: time embedder, norms,
        modulation tables), ``dtype`` for the rest, so a half-precision fvdm model holds what diffusers' does."""
        keep = tuple(getattr(type(self.transformer), "_keep_in_fp32_modules", None) or ()) if dtype != torch.float32 else ()
        return {k: torch.float32 if any(m in k.split(".") for m in keep) else dtype
                for k in self.transformer.state_dict()}

    @torch.no_grad()
    def cast(self, dtype: torch.dtype) -> "FrameModulatedWan":
        """Parameters to ``weight_dtypes(dtype)``, in place; buffers keep theirs (rope's float64 tables, as diffusers
        keeps them). A tensor still on the meta device is a weight no checkpoint filled: refused."""
        want = self.weight_dtypes(dtype)
        for name, p in self.transformer.named_parameters():
            if p.is_meta:
                raise RuntimeError(f"{self.name}: parameter {name} was never loaded (still on the meta device); "
                                   "build the backbone without weights_follow or load a complete directory")
            if p.dtype != want[name] and p.is_floating_point():
                p.data = p.data.to(want[name])
        meta = [n for n, b in self.transformer.named_buffers() if b.is_meta]
        if meta:
            raise RuntimeError(f"{self.name}: buffer {meta[0]} is on the meta device (no checkpoint holds it); "
                               "make_transformer must compute it when it builds the model empty")
        return self

    @torch.no_grad()
    def _check_lora_base(self, path: str) -> str | None:
        """The base fingerprint the LoRA file records, after checking it is this model's; None if it records none."""
        from fvdm.core.lora import LoraError, base_fingerprint
        from fvdm.plugins.backbones.pusa_import import recorded_base_fingerprint

        recorded = recorded_base_fingerprint(path)
        if recorded is not None and recorded != (ours := base_fingerprint(self)):
            raise LoraError(f"backbone.lora {path}: trained on another base (fingerprint {recorded[:12]}, the "
                            f"weights in backbone.pretrained are {ours[:12]}); point backbone.pretrained at the base "
                            "it was trained on")
        return recorded

    def _merge_diffusers_lora(self, path: str, scale: float) -> dict[str, Any]:
        """Add a diffusers-format Wan LoRA (``fvdm export --adapter``, ``save_lora_weights``) as adapters, after
        checking the base fingerprint it records, scale its update, and fold it into the weights."""
        from fvdm.core.lora import LoraError, load_diffusers_lora, lora_layers, merge_lora

        try:
            adapted = load_diffusers_lora(self, path)
        except LoraError as exc:
            raise LoraError(f"backbone.lora {path}: {exc}") from exc
        if scale != 1.0:
            for layer in lora_layers(self).values():
                for up in layer.lora_B.values():
                    up.weight.mul_(scale)
        merge_lora(self)
        return {"file": str(path), "format": "diffusers", "modules": len(adapted), "scale": scale}


def is_diffusers_lora(path: str | Path) -> bool:
    """Is ``path`` a LoRA in diffusers' Wan layout (a directory holding ``pytorch_lora_weights.safetensors``, or a
    .safetensors file of ``transformer.<module>.lora_A/B.weight`` keys) rather than DiffSynth's (Pusa's)?"""
    from fvdm.core.lora import DIFFUSERS_PREFIX, LORA_FILE

    p = Path(path).expanduser()
    if p.is_dir():
        return (p / LORA_FILE).is_file()
    if p.suffix != ".safetensors" or not p.is_file():
        return False
    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as f:
        return all(k.startswith(DIFFUSERS_PREFIX + ".") for k in f.keys())


def diffusers_kwargs(size: WanSize, in_channels: int) -> dict[str, Any]:
    """The ``__init__`` keywords of the diffusers model for one size row."""
    return dict(patch_size=size.patch, num_attention_heads=size.heads, attention_head_dim=size.head_dim,
                in_channels=in_channels, out_channels=in_channels, text_dim=size.text_dim, freq_dim=size.freq_dim,
                ffn_dim=size.ffn_dim, num_layers=size.layers, cross_attn_norm=size.cross_attn_norm,
                qk_norm=size.qk_norm, eps=size.eps, rope_max_seq_len=size.rope_max_seq_len)


def make_transformer(cls: Callable[..., nn.Module], cfg: Any, size: WanSize,
                     extra: dict[str, Any] | None = None) -> nn.Module:
    """The diffusers model of ``size``: random-init, or empty when its weights are read right after.

    Under ``weights_follow`` (``build_model`` reads ``pretrained`` next) it is built on the meta device: no
    random values are drawn or stored (at Wan2.1-1.3B that initialisation was half of the load), and
    ``load_pretrained`` assigns the tensors it reads. Rope's cos/sin tables are buffers no checkpoint holds,
    so the rope module is built again on the CPU, exactly as the random-init model computes it.
    """
    from fvdm.core.pretrained import weights_follow_now

    kwargs = transformer_kwargs(cfg, size, extra)
    if not weights_follow_now():
        return cls(**kwargs)
    with torch.device("meta"):
        model = cls(**kwargs)
    model.rope = type(model.rope)(kwargs["attention_head_dim"], kwargs["patch_size"], kwargs["rope_max_seq_len"])
    return model


def transformer_kwargs(cfg: Any, size: WanSize, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {**diffusers_kwargs(size, size.channels if cfg.in_channels is None else cfg.in_channels), **(extra or {})}


def check_size_fields(cfg: Any, sizes: dict[str, WanSize], family: str) -> None:
    """Validation shared by both Configs (called from their model validators)."""
    size = sizes[cfg.size]
    if cfg.in_channels is not None and size.repo is not None and cfg.in_channels != size.channels:
        raise ValueError(f"{family} size {cfg.size!r} takes {size.channels}-channel latents (its VAE), got in_channels="
                         f"{cfg.in_channels}; use that VAE or a random-init size (tiny)")
    if cfg.lora is not None and cfg.pretrained is None:
        raise ValueError(f"{family}: a LoRA adapts pretrained weights: set pretrained: DIR (the base it was trained "
                         "on) with lora")
    if cfg.num_classes:
        raise ValueError(f"{family} is text-conditioned, not class-conditioned: set backbone.num_classes: 0")
    if cfg.learn_sigma:
        raise ValueError(f"{family} predicts a flow velocity, no variance: use a flow noise schedule "
                         "(rectified_flow), learn_sigma false")
    if size.patch[0] != 1:
        raise ValueError(f"{family}: per-frame levels need a temporal patch of 1, size {cfg.size!r} has {size.patch}")


def block_causal_mask(frames: int, grid: tuple[int, int], block_frames: int, device: torch.device) -> torch.Tensor:
    """(1, 1, S, S) bool, True = attend: a token sees the tokens of its own and earlier blocks of ``block_frames``."""
    block = torch.arange(frames, device=device) // block_frames  # (F,)
    allowed = block[None, :] <= block[:, None]  # (F_query, F_key)
    n = math.prod(grid)
    return repeat(allowed, "fq fk -> 1 1 (fq nq) (fk nk)", nq=n, nk=n)

