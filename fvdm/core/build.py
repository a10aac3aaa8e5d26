"""One path from an experiment config to its components.

    config --resolve_config--> {field: (entry, validated Config)}
           --> dataset, noise schedule, VTV strategy, autoencoder
           --> data_info (pixel and latent shapes) --> backbone spec (shapes filled in) --> backbone

Training (``fvdm.core.engine``), loading a checkpoint for sampling
(``fvdm.core.loaded.load_for_sampling``) and the benchmarks all build through
here, so a backbone is sized the same way wherever it is made. Each plugin config is
validated once (by ``resolve_config``) and constructed from that validated result.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch

from fvdm.core.config import DERIVED_BACKBONE_KEYS, PLUGIN_FIELDS, ExperimentConfig, plugin_ref, resolve_config
from fvdm.core.errors import ConfigError, FvdmError
from fvdm.core.interfaces import Autoencoder, BackboneConfig, NoiseSchedule, VideoDataset, VTVStrategy
from fvdm.core.pretrained import weights_follow
from fvdm.core.temporal import latent_frame_count


def build_plugin(plugins: Any, kind: str, spec: dict[str, Any], field: str, *,
                 resolved: tuple[Any, Any] | None = None) -> Any:
    """``plugins[kind].build(spec, plugins=plugins)`` with the config field named in errors.

    ``resolved`` is the ``(entry, validated Config)`` pair ``resolve_config`` already made for
    this field: the object is then constructed from it without validating ``spec`` again.
    """
    registry = plugins[kind]
    try:
        if resolved is not None:
            return registry.instantiate(*resolved, plugins=plugins)
        return registry.build(spec, plugins=plugins)
    except FvdmError:
        raise
    except Exception as exc:
        msg = f"building {kind} {spec.get('name')!r} failed: {type(exc).__name__}: {exc}"
        raise ConfigError([(field, msg)]) from exc


def data_info(dataset: VideoDataset, autoencoder: Autoencoder) -> dict[str, int]:
    """Shapes of the training data (pixel space) and of the space the backbone sees (latent; a video VAE
    with temporal compression makes fewer latent frames, ``fvdm.core.temporal``)."""
    try:
        f, c, r = int(dataset.num_frames), int(dataset.channels), int(dataset.resolution)
    except AttributeError as exc:
        raise ConfigError([("data", f"dataset {type(dataset).__name__} lacks {exc.name!r}: datasets must expose "
                                    "num_frames, channels, resolution, num_classes")]) from None
    nc = int(getattr(dataset, "num_classes", 0) or 0)
    if hasattr(autoencoder, "latent_shape"):
        lc, lr = (int(v) for v in autoencoder.latent_shape(c, r))
    else:
        down = int(getattr(autoencoder, "downsample", 1) or 1)
        if r % down:
            raise ConfigError([("data", f"resolution {r} is not divisible by the autoencoder's downsample {down}")])
        lc = getattr(autoencoder, "latent_channels", None)
        lc, lr = (c if lc in (None, 0) else int(lc)), r // down
    try:
        lf = latent_frame_count(autoencoder, f)
    except ValueError as exc:
        raise ConfigError([("data.num_frames", f"{exc} (autoencoder {type(autoencoder).__name__})")]) from None
    info = {"num_frames": f, "channels": c, "resolution": r, "num_classes": nc,
            "latent_channels": lc, "latent_resolution": lr, "latent_frames": lf}
    h, w = int(getattr(dataset, "height", r) or r), int(getattr(dataset, "width", r) or r)
    if (h, w) != (r, r):  # non-square clips (Wan's 480x832): recorded only then, so square runs keep their info
        if hasattr(autoencoder, "latent_shape"):
            lh, lw = (int(autoencoder.latent_shape(c, s)[1]) for s in (h, w))
        else:
            down = int(getattr(autoencoder, "downsample", 1) or 1)
            lh, lw = h // down, w // down
        info.update(height=h, width=w, latent_height=lh, latent_width=lw)
    return info


def model_frames(info: dict[str, int]) -> int:
    """Frames the backbone sees per clip: the latent frames (a checkpoint from before temporal VAEs: the frames)."""
    return int(info.get("latent_frames", info["num_frames"]))


def frame_size(info: dict[str, int], latent: bool = False) -> tuple[int, int]:
    """(H, W) of a frame in pixel space (``latent``: the backbone's space); square data: (resolution,) * 2."""
    r = int(info["latent_resolution" if latent else "resolution"])
    return int(info.get("latent_height" if latent else "height", r)), int(info.get("latent_width" if latent
                                                                                   else "width", r))


def backbone_spec(cfg: ExperimentConfig, plugins: Any, info: dict[str, int],
                  schedule: NoiseSchedule) -> dict[str, Any]:
    """The backbone spec with in_channels/input_size/num_frames/num_classes/learn_sigma filled in.

    A value given in the config is kept when it is compatible (num_frames >= the data's
    frames, num_classes 0 to train unconditionally) and is an error otherwise.
    """
    spec = cfg.backbone.spec()
    entry = plugins["backbones"].get(spec["name"])
    backbone_config(entry)
    want = {
        "in_channels": info["latent_channels"],
        "input_size": info["latent_resolution"],
        "num_frames": model_frames(info),
        "num_classes": info["num_classes"],
        "learn_sigma": bool(getattr(schedule, "learn_sigma", False)),
    }
    assert set(want) == set(DERIVED_BACKBONE_KEYS), "config show leaves out exactly the fields filled in here"
    errors = []
    for key, value in want.items():
        given = spec.get(key)
        if given is None:
            spec[key] = value
        elif key == "num_frames" and given < value:
            errors.append(("backbone.num_frames", f"{given} frames of capacity but the data has {value} frames per "
                                                  f"clip; raise backbone.num_frames or lower the data's num_frames"))
        elif key == "num_classes" and given not in (0, value):
            errors.append(("backbone.num_classes", f"{given}, but the data has {value} classes; use {value}, "
                                                   "0 (unconditional) or remove the key"))
        elif key not in ("num_frames", "num_classes") and given != value:
            errors.append((f"backbone.{key}", f"{given!r}, but data/autoencoder/noise schedule imply {value!r}; "
                                              "remove the key (the engine fills it in)"))
    if errors:
        raise ConfigError(errors)
    return spec


def backbone_config(entry: Any) -> type[BackboneConfig]:
    """The backbone's Config class, which must extend ``BackboneConfig`` (the fields the build fills and
    the conditioning it wires): a Config that lacks them would be built wrong silently."""
    cls = entry.config
    if not (isinstance(cls, type) and issubclass(cls, BackboneConfig)):
        raise ConfigError([("backbone", f"{entry.name!r} ({entry.origin}) has a Config that does not extend "
                                        "fvdm.core.interfaces.BackboneConfig (in_channels, input_size, num_frames, "
                                        "num_classes, learn_sigma, pretrained, conditioning); subclass it")])
    return cls


def build_model(plugins: Any, spec: dict[str, Any], check_against: NoiseSchedule | None = None, *,
                load_pretrained: bool = False, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Build the backbone from a complete spec; check its output channels against the schedule.

    ``load_pretrained``: read ``spec["pretrained"]`` into it (a fresh run, or sampling a config that
    names weights). Resuming and loading a checkpoint leave it False: the checkpoint holds the weights,
    so the directory is never read again (and may be gone). The provenance of what was read is left on
    the model as ``pretrained_info``. The backbone is constructed under ``weights_follow`` then, so one
    that can (Wan) builds empty weights instead of random ones it would overwrite. ``dtype``: the weights'
    dtype for a backbone whose ``load_pretrained`` reads in it (sampling in bf16); None: as built.
    """
    reads = bool(load_pretrained and spec.get("pretrained"))
    with weights_follow() if reads else contextlib.nullcontext():
        model = build_plugin(plugins, "backbones", spec, "backbone")
    if reads:
        model.pretrained_info = read_pretrained(model, spec, dtype=dtype)
    if check_against is not None and hasattr(model, "out_channels") and hasattr(check_against, "out_channels"):
        want = check_against.out_channels(int(spec.get("in_channels", model.in_channels)))
        if int(model.out_channels) != int(want):
            raise ConfigError([("backbone", f"outputs {model.out_channels} channels but the noise schedule needs "
                                            f"{want} (learn_sigma={getattr(check_against, 'learn_sigma', None)})")])
    return model


def read_pretrained(model: torch.nn.Module, spec: dict[str, Any], *, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Fill ``model`` from the local directory ``spec["pretrained"]``: the backbone's own ``load_pretrained``
    (diffusers-format Wan directories; given ``dtype`` when one is asked for), else an fvdm backbone directory
    (config.json naming the backbone, safetensors weights of exactly the model's keys and shapes)."""
    directory = str(spec["pretrained"])
    try:
        if hasattr(model, "load_pretrained"):
            return dict(model.load_pretrained(directory) if dtype is None else model.load_pretrained(directory, dtype))
        from fvdm.core.pretrained import check_config, directory_fingerprint, read_config, read_state_dict

        what, public = f"backbone {spec['name']!r}", f"an fvdm backbone directory of {spec['name']!r}"
        check_config(read_config(directory, None, public_copy=public, what=what), {"backbone": spec["name"]},
                     path=directory, public_copy=public, what=what)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        # modules a backbone can grow on a model without them (zero-initialised outputs: the grown model computes
        # what the folder's did until it trains); each one is either wholly in the folder or wholly new
        optional = model.growth_modules() if hasattr(model, "growth_modules") else {}
        state = read_state_dict(directory, expected=expected, public_copy=public, what=what, optional=optional)
        grown = sorted(name for name, keys in optional.items() if not set(keys) & set(state))
        model.load_state_dict(state, strict=not grown)
        info = {"directory": directory, "fingerprint": directory_fingerprint(directory)}
        return {**info, "grown": grown} if grown else info
    except FvdmError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        if str(exc).startswith("backbone.lora "):  # the LoRA file's own problem: name that field, not the base's
            field, _, message = str(exc).partition(" ")
            raise ConfigError([(field, message)]) from exc
        raise ConfigError([("backbone.pretrained", f"{directory}: {exc}")]) from exc


@dataclass
class Components:
    """What a config builds: the plugins a training run uses, and the shapes that sized the backbone.

    ``info``: data_info (pixel and latent shapes); ``spec``: the backbone spec actually built
    (stored in checkpoints as ``model_info``); ``resolved``: resolve_config's result, for
    ``canonical_dict(cfg, resolved=...)`` without validating the config a third time.
    """

    dataset: VideoDataset
    model: torch.nn.Module  # a Backbone
    schedule: NoiseSchedule
    vtv: VTVStrategy
    autoencoder: Autoencoder
    info: dict[str, int]
    spec: dict[str, Any]
    resolved: dict[tuple[str, ...], tuple[Any, Any]] = field(repr=False)


def build_components(cfg: ExperimentConfig, plugins: Any, *,
                     resolved: dict[tuple[str, ...], tuple[Any, Any]] | None = None,
                     load_pretrained: bool = True, dtype: torch.dtype | None = None) -> Components:
    """Validate ``cfg`` against its plugins once (unless the caller passes ``resolve_config``'s result as
    ``resolved``) and build every training component; the model fits the data. ``load_pretrained``: read
    ``backbone.pretrained`` (a fresh run; a resumed one passes False: its checkpoint holds the weights);
    ``dtype``: as ``build_model``'s (sampling a config in half precision)."""
    resolved = resolve_config(cfg, plugins) if resolved is None else resolved

    def make(*path: str) -> Any:
        return build_plugin(plugins, PLUGIN_FIELDS[path], plugin_ref(cfg, path).spec(), ".".join(path),
                            resolved=resolved[path])

    dataset = make("data")
    schedule = make("noise_schedule")
    vtv = make("vtv")
    autoencoder = make("autoencoder")
    if callable(getattr(dataset, "check_autoencoder", None)):  # latents packed with one autoencoder: the same one
        entry, acfg = resolved[("autoencoder",)]
        try:
            dataset.check_autoencoder({"name": entry.name, **(acfg.model_dump(mode="json") if acfg else {})})
        except ValueError as exc:
            raise ConfigError([("autoencoder", str(exc))]) from None
    info = data_info(dataset, autoencoder)
    # the backbone spec gains data-derived fields, so it is validated here (its resolved Config lacks them)
    spec = backbone_spec(cfg, plugins, info, schedule)
    model = build_model(plugins, spec, check_against=schedule, load_pretrained=load_pretrained, dtype=dtype)
    return Components(dataset, model, schedule, vtv, autoencoder, info, spec, resolved)


def set_attention(model: torch.nn.Module, cfg: ExperimentConfig, plugins: Any, device: torch.device,
                  dtype: torch.dtype) -> str | None:
    """Install the configured attention kernel when the model takes one; returns the kernel's name."""
    if not hasattr(model, "set_attention_kernel"):
        return None
    from fvdm.core.attention import select_attention_kernel

    fn = select_attention_kernel(plugins, cfg.attention, device=device, dtype=dtype)
    model.set_attention_kernel(fn)
    return fn.describe(device, dtype)


def plugin_origins(resolved: dict[tuple[str, ...], tuple[Any, Any]]) -> dict[str, dict[str, str]]:
    """Which registered item (and from which distribution/version) each plugin field resolved to:
    a run trained with a third-party ``ptss`` must not look like one trained with the built-in."""
    return {".".join(path): {"kind": entry.kind, "name": str(entry.name), "origin": str(entry.origin),
                             "plugin": str(entry.plugin)}
            for path, (entry, _) in resolved.items()}
