"""Experiment configs (pydantic v2), resolved in two passes.

Pass 1 validates the experiment's own fields; plugin references stay open
(``{name: ..., **params}``). Pass 2 looks each name up in its registry and
validates the params with that plugin's own ``Config``, so third-party plugins are
configurable without touching core. Every error is reported with its path.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fvdm.core.errors import ConfigError, UnknownPluginError
from fvdm.core.interfaces import PluginConfig
from fvdm.core.lora import LoraSettings
from fvdm.core.registry import is_validation_error


class PluginRef(BaseModel):
    """A reference to a registered plugin: ``{name: ..., <that plugin's params>}``."""

    model_config = ConfigDict(extra="allow")
    name: str

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}


class TrainSettings(PluginConfig):
    """Optimisation and bookkeeping of ``fvdm train`` (engine: fvdm/core/engine.py)."""

    steps: int = Field(2000, ge=1, description="optimizer steps")
    batch_size: int = Field(
        8, ge=1, description="global batch per optimizer step (split over ranks and grad_accum)")
    grad_accum: int = Field(
        1, ge=1, description="micro-batches per optimizer step; batch_size must divide by ranks*grad_accum")
    lr: float = Field(1e-4, gt=0)
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="after warmup: constant (DiT/Latte) or cosine to min_lr_ratio*lr")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final lr / lr for lr_schedule=cosine")
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0, description="linear lr warmup from lr/warmup_steps to lr")
    grad_clip: float | None = Field(1.0, gt=0, description="max grad norm; null disables (the norm is still logged)")
    spike_factor: float = Field(
        50.0, ge=0, description="stop as diverged when a step's loss exceeds this many times the median of the "
        "last 200 losses (after 100 steps; before that 100 x this many times max(1, the first 10 losses)), before the step is applied or saved; 0 disables")
    init_from: str | None = Field(
        None, description="a fresh run starting from other weights (a fine-tune, not a resume): an fvdm checkpoint "
                          "file (its EMA weights; init_weights: model for the raw ones) or a backbone weights directory")
    init_weights: Literal["ema", "model"] = Field("ema", description="which weights of the init_from checkpoint")
    lora: LoraSettings | None = Field(None, description="train LoRA adapters (peft) on the frozen base instead of "
                                                        "every weight: {rank, alpha, target_modules, dropout}; "
                                                        "checkpoints hold the adapters and the base's fingerprint")
    ema_decay: float = Field(0.9999, ge=0, le=1)
    ema_warmup: bool = Field(
        True, description="use min(ema_decay, (1+step)/(10+step)) so short runs get a useful EMA")
    dtype: Literal["float32", "float64"] = Field(
        "float32", description="parameter/data dtype; float64 only for exact equivalence checks (DDP vs 1 process)")
    bf16: bool = Field(False, description="bf16 autocast for the backbone forward (loss in fp32)")
    compile: bool = Field(False, description="torch.compile the backbone")
    parallel: Literal["ddp", "fsdp2"] = Field("ddp", description="multi-process wrapper under torchrun")
    num_workers: int = Field(0, ge=0)
    log_every: int = Field(10, ge=1)
    ckpt_every: int = Field(500, ge=1, description="also written at the end of every call")
    keep_last: int = Field(2, ge=1, description="step-<N>.pt checkpoints kept beside last.pt; --resume falls back "
                                                "to the newest one that loads if last.pt is damaged")
    sample_every: int = Field(0, ge=0, description="0 disables sample GIFs during training")
    sample_batch: int = Field(4, ge=1, description="videos per sample GIF")
    eval_every: int = Field(0, ge=0, description="0 disables; else FVD-style eval of EMA samples every N steps")
    validate_every: int = Field(0, ge=0, description="0 disables; else every N steps the EMA model samples "
                                                     "validate_tasks on held-out clips (same noise each time): PNG "
                                                     "grid in validation/, TensorBoard, L1 to the real clips")
    validate_tasks: list[str] = Field(default_factory=lambda: ["unconditional", "image_to_video", "extension"],
                                      description="unconditional, image_to_video, extension, interpolation")
    validate_clips: int = Field(4, ge=1, description="held-out clips per validation (the data's test split)")
    validate_prompts: list[str] = Field(default_factory=list, description="text models without packed "
                                                                          "embeddings: prompts, cycled over clips")
    eval_metric: str = Field("fvd_digits", description="registered evaluator used by eval_every")
    eval_samples: int = Field(256, ge=2, description="generated and real (test split) clips per eval")
    tensorboard: bool = True
    loss_buckets: int = Field(4, ge=1, description="timestep buckets for per-bucket loss scalars")
    clean_frame_loss: bool = Field(
        True, description="frames drawn at level 0 count in the loss. At level 0 the target (the noise of a frame "
                          "that is 1% noise, or a flow's velocity) cannot be read from the input, so such a frame "
                          "adds an irreducible term (0.19 per frame on moving digits, more than a generated "
                          "frame's) and a sampler never asks the model for it: a given frame is re-imposed. false: "
                          "the loss is the mean over the frames above level 0, what a VTV strategy with clean "
                          "context (context_mix, clean_first) should train on")


class SampleSettings(PluginConfig):
    sampler: PluginRef = PluginRef(name="ddim")
    schedule: PluginRef = PluginRef(name="standard")
    steps: int = Field(50, ge=1)
    cfg_scale: float = Field(1.0, ge=0)
    use_ema: bool = True
    dtype: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="the backbone's weights and forward when sampling (`fvdm sample --dtype`); the sampler's "
                            "arithmetic (schedule, noise, x_t update) stays float32, as diffusers keeps its "
                            "scheduler's. bf16 halves the weights' memory; Wan reads its shards straight into it")


class ExperimentConfig(PluginConfig):
    """One training/sampling experiment; ``fvdm config schema`` prints its JSON schema."""

    name: str = "fvdm"
    seed: int = 0
    run_root: str = "runs"
    data: PluginRef = PluginRef(name="moving_digits")
    backbone: PluginRef = PluginRef(name="latte_tiny")
    noise_schedule: PluginRef = PluginRef(name="ddpm")
    vtv: PluginRef = PluginRef(name="ptss")
    autoencoder: PluginRef = PluginRef(name="identity")
    text_encoder: PluginRef | None = Field(
        None, description="prompts -> embeddings for a text-conditioned backbone (umt5: {name: umt5, path: DIR}); "
                          "used by `fvdm sample --prompt` and `fvdm data pack --text-encoder`")
    validation: PluginRef | None = Field(
        None, description="held-out data for train.validate_every, e.g. {name: webdataset, urls: held-out shards}: "
                          "its first train.validate_clips clips, read once; default: the training data's test split")
    attention: str = Field("auto", description="auto | math | sdpa | xformers | flex | any registered kernel")
    train: TrainSettings = TrainSettings()
    sample: SampleSettings = SampleSettings()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or "/" in v or v.startswith("."):
            raise ValueError("name must be a plain directory name (no '/', not starting with '.')")
        return v


#: experiment field path -> registry kind, for pass 2
PLUGIN_FIELDS: dict[tuple[str, ...], str] = {
    ("data",): "datasets",
    ("backbone",): "backbones",
    ("noise_schedule",): "noise_schedules",
    ("vtv",): "vtv_strategies",
    ("autoencoder",): "autoencoders",
    ("text_encoder",): "text_encoders",  # optional: None = no text
    ("validation",): "datasets",  # optional: None = the training data's test split
    ("sample", "sampler"): "samplers",
    ("sample", "schedule"): "sampling_schedules",
}


def _loc(parts: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in parts) or "<root>"


def model_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that holds the last key of ``loc`` (walking nested model fields), or None."""
    for part in loc:
        field = model.model_fields.get(str(part)) if model is not None else None
        if field is None:
            return None
        ann = field.annotation
        nested = [a for a in (getattr(ann, "__args__", None) or (ann,))
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        model = nested[0] if nested else None
    return model


def close_key_hint(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> str:
    """`` Did you mean 'slope'?`` for a misspelled key at ``loc`` of ``model`` (empty when nothing is close)."""
    if not loc:
        return ""
    holder = model_at(model, tuple(loc[:-1]))
    if holder is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(holder.model_fields), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def _pydantic_errors(exc: BaseException, prefix: tuple[Any, ...] = (),
                     model: type[BaseModel] | None = None) -> list[tuple[str, str]]:
    """(path, message) per error; ``model`` is the validated class, for close-match hints on unknown keys."""
    out = []
    for err in exc.errors():  # type: ignore[attr-defined]
        loc = prefix + tuple(err.get("loc", ()))
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            hint = close_key_hint(model, tuple(err.get("loc", ())))
            msg = f"unknown key (typo?).{hint} Remove it or check `fvdm config schema`" if hint else \
                "unknown key (typo?); remove it or check `fvdm config schema`"
        elif "input" in err and err.get("type") not in ("missing",):
            msg = f"{msg} (got {err['input']!r})"
        out.append((_loc(loc), msg))
    return out


def load_config_dict(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file into a dict (top level must be a mapping)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError([("<file>", f"cannot parse {path.suffix or 'YAML'}: {exc}")], str(path)) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([("<root>", f"top level must be a mapping, got {type(data).__name__}")], str(path))
    return data


def parse_config(data: Mapping[str, Any], source: str | None = None) -> ExperimentConfig:
    """Pass 1: validate the experiment fields; raise ConfigError with every path."""
    try:
        return ExperimentConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_pydantic_errors(exc, model=ExperimentConfig), source) from None


def plugin_ref(cfg: BaseModel, path: tuple[str, ...]) -> PluginRef | None:
    """The plugin reference at ``path`` (a key of ``PLUGIN_FIELDS``), e.g. ("sample", "sampler"); None for an
    optional field left out."""
    obj: Any = cfg
    for p in path:
        obj = getattr(obj, p)
    return obj


def resolve_config(cfg: ExperimentConfig, plugins: Any, source: str | None = None) -> dict[tuple[str, ...], tuple[Any, Any]]:
    """Pass 2: validate each plugin reference with its plugin's Config.

    Returns ``{field_path: (entry, validated_config_or_None)}``; raises ConfigError
    listing every problem (unknown names with suggestions, bad params with paths).
    """
    errors: list[tuple[str, str]] = []
    resolved: dict[tuple[str, ...], tuple[Any, Any]] = {}
    for path, kind in PLUGIN_FIELDS.items():
        ref = plugin_ref(cfg, path)
        if ref is None:  # an optional plugin field left out (text_encoder)
            continue
        try:
            resolved[path] = plugins[kind].validate(ref.spec())
        except UnknownPluginError as exc:
            errors.append((_loc(path + ("name",)), str(exc)))
        except Exception as exc:
            if is_validation_error(exc):
                entry = plugins[kind].get(ref.name)
                for loc, msg in _pydantic_errors(exc, path, model=entry.config):
                    errors.append((loc, f"{msg} [{kind} {ref.name!r} from {entry.origin}]"))
            else:
                raise
    if cfg.attention != "auto":
        try:
            plugins["attention_kernels"].get(cfg.attention)
        except UnknownPluginError as exc:
            errors.append(("attention", str(exc)))
    if errors:
        raise ConfigError(errors, source)
    return resolved


def canonical_dict(cfg: ExperimentConfig, plugins: Any | None = None, *,
                   resolved: dict[tuple[str, ...], tuple[Any, Any]] | None = None) -> dict[str, Any]:
    """The config as plain JSON data, plugin params filled with their defaults when
    ``plugins`` is given (so ``{name: ptss}`` and ``{name: ptss, p: 0.2}`` are equal).

    ``resolved``: ``resolve_config``'s result when the caller has it (no second validation).
    Plugin names are written as registered, so an alias and its entry give the same dict.
    """
    data = cfg.model_dump(mode="json", serialize_as_any=True)
    for key, old in ADDED_TOP_LEVEL.items():  # as for plugin fields below: earlier runs keep their hash
        if data.get(key, old) == old:
            data.pop(key, None)
    for (section, key), old in ADDED_SECTION_FIELDS.items():
        if data[section].get(key, old) == old:
            data[section].pop(key, None)
    if resolved is None:
        if plugins is None:
            return data
        resolved = resolve_config(cfg, plugins)
    for path, (entry, pcfg) in resolved.items():
        node = data
        for p in path[:-1]:
            node = node[p]
        params = pcfg.model_dump(mode="json") if pcfg is not None else {}
        # a field added to a plugin after its configs were in use leaves the canonical dict (hash, resume check)
        # as it was while it holds the value that reproduces the old behaviour: old runs keep their directory
        # and resume; a Config lists such fields in ``added_defaults``
        for key, old in getattr(type(pcfg), "added_defaults", {}).items():
            if params.get(key, old) == old:
                params.pop(key, None)
        node[path[-1]] = {"name": entry.name, **params}
    return data


#: top-level fields added after configs were in use, at the value that trains as before they existed
ADDED_TOP_LEVEL: dict[str, Any] = {"validation": None}
#: fields of the train / sample sections added likewise: (section, field) -> the value that behaves as before
ADDED_SECTION_FIELDS: dict[tuple[str, str], Any] = {("sample", "dtype"): "fp32", ("train", "clean_frame_loss"): True}

#: Backbone fields the build derives from the data, the autoencoder and the noise schedule when a config leaves
#: them out (a value the config gives is checked against them instead). A backbone Config's own default for
#: them (latte's in_channels 4) is a placeholder, so ``config show`` must not print it as if it were chosen.
DERIVED_BACKBONE_KEYS = ("in_channels", "input_size", "num_frames", "num_classes", "learn_sigma")


def shown_dict(cfg: ExperimentConfig, plugins: Any | None = None, *,
               resolved: dict[tuple[str, ...], tuple[Any, Any]] | None = None) -> dict[str, Any]:
    """The config ``fvdm config show`` prints and a run's ``config.yaml`` holds: every plugin default filled
    in except the backbone fields the build derives (unless the config gives them), so the output trains
    exactly as the input does and has the same hash (re-filling the left-out defaults gives the same
    canonical dict). ``resolved`` as in ``canonical_dict``."""
    data = canonical_dict(cfg, plugins, resolved=resolved)
    given = set(cfg.backbone.params)
    for key in DERIVED_BACKBONE_KEYS:
        if key not in given:
            data["backbone"].pop(key, None)
    return data


def config_hash(cfg: ExperimentConfig, plugins: Any | None = None, length: int = 10) -> str:
    """Short sha256 of the canonical config: names run directories."""
    return canonical_hash(canonical_dict(cfg, plugins), length)


def canonical_hash(canonical: dict[str, Any], length: int = 10) -> str:
    """Short sha256 of a canonical config dict (``config_hash`` when the caller already has the dict)."""
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def dump_config(cfg: ExperimentConfig, path: str | Path | None = None, fmt: str | None = None) -> str:
    """YAML or JSON text that loads back to an equal config."""
    data = cfg.model_dump(mode="json", serialize_as_any=True)
    if fmt is None:
        fmt = "json" if path is not None and str(path).endswith(".json") else "yaml"
    text = json.dumps(data, indent=2) + "\n" if fmt == "json" else yaml.safe_dump(data, sort_keys=False)
    if path is not None:
        Path(path).write_text(text)
    return text


def load_config(path: str | Path, plugins: Any | None = None) -> ExperimentConfig:
    """Load and validate (both passes when ``plugins`` is given)."""
    cfg = parse_config(load_config_dict(path), str(path))
    if plugins is not None:
        resolve_config(cfg, plugins, str(path))
    return cfg


def key_value(item: str, error: Callable[[str], Exception], empty: Any = None) -> tuple[list[str], Any]:
    """``"a.b=v"`` -> (``["a", "b"]``, v parsed as YAML; ``empty`` for ``"a="``), the one parser of every
    KEY=VALUE the CLI and configs take (``-o``, ``--set``, ``--*-param``); ``error(item)`` when it is not one."""
    key, eq, raw = item.partition("=")
    if not eq or not key.strip():
        raise error(item)
    return key.strip().split("."), (yaml.safe_load(raw) if raw.strip() else empty)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a config dict."""
    for ov in overrides:
        parts, value = key_value(ov, lambda item: ConfigError([(item, "override must look like key.path=value")]))
        node = data
        for p in parts[:-1]:
            nxt = node.get(p)
            if isinstance(nxt, str):  # plugin given by name only
                nxt = {"name": nxt}
            node[p] = nxt if isinstance(nxt, dict) else {}
            node = node[p]
        node[parts[-1]] = value
    return data


def experiment_schema(plugins: Any | None = None) -> dict[str, Any]:
    """JSON schema of ExperimentConfig; with ``plugins``, each plugin field lists
    the registered names and their params (anyOf over registered Configs)."""
    schema = ExperimentConfig.model_json_schema()
    if plugins is None:
        return schema
    defs = schema.setdefault("$defs", {})
    for path, kind in PLUGIN_FIELDS.items():
        options = []
        for entry in plugins[kind].list():
            sub = entry.config.model_json_schema() if entry.config is not None else {"type": "object", "properties": {}}
            sub = dict(sub)
            sub_defs = sub.pop("$defs", {})
            defs.update(sub_defs)
            props = dict(sub.get("properties", {}))
            props["name"] = {"const": entry.name}
            options.append({**sub, "properties": props, "required": ["name"], "title": f"{kind}:{entry.name}"})
        node = schema
        if len(path) == 2:
            ref = schema["properties"][path[0]].get("$ref") or schema["properties"][path[0]].get("allOf", [{}])[0].get("$ref")
            node = defs[ref.split("/")[-1]] if ref else schema
        prop = node["properties"][path[-1]]
        prop.pop("$ref", None)
        prop.pop("allOf", None)
        optional = any(o.get("type") == "null" for o in prop.get("anyOf", []))
        prop["anyOf"] = (options or [{"$ref": "#/$defs/PluginRef"}]) + ([{"type": "null"}] if optional else [])
    return schema
