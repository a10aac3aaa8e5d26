"""Plugin specs on the command line: ``--schedule NAME --schedule-param key=value`` -> ``{name, **params}``.

A spec is a plugin name plus parameters, validated by that plugin's own ``Config``
(two-pass, as in experiment configs), so a third-party plugin's parameters are set
exactly like a built-in's. Specs are layered (checkpoint config, command line, job):
a layer naming a *different* plugin replaces the spec below it; a layer with the same
name or with parameters only updates the parameters below it.
"""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import BaseModel, ValidationError

from fvdm.core.config import close_key_hint, key_value, model_at
from fvdm.core.registry import ValidationErrorLike


def parse_params(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    """``["center=0", "spacing=leading"]`` -> ``{"center": 0, "spacing": "leading"}`` (values parsed as YAML;
    a dotted key ``schedule.u=2`` sets a nested mapping)."""
    params: dict[str, Any] = {}
    for pair in pairs or []:
        parts, value = key_value(pair, lambda item: ValueError(
            f"{flag} expects KEY=VALUE (e.g. {flag} center=0), got {item!r}"))
        node = params
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{flag} {pair!r}: {part!r} is set both as a value and as a mapping")
        node[parts[-1]] = value
    return params


def as_spec(value: Any, what: str) -> dict[str, Any] | None:
    """A name, a mapping (``name`` optional: parameters only) or None -> a spec mapping or None."""
    if value is None:
        return None
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return dict(value)
    raise ValueError(f"{what} must be a plugin name or a mapping {{name: ..., param: value}}, got {value!r}")


def merge_spec(base: Any, over: Any, what: str = "spec") -> dict[str, Any] | None:
    """``over`` on top of ``base``: another plugin's name replaces ``base``, otherwise parameters update it."""
    base, over = as_spec(base, what), as_spec(over, what)
    if over is None:
        return base
    if base is None or ("name" in over and over["name"] != base.get("name")):
        return over
    return {**base, **over}


def resolve_spec(registry: Any, spec: Mapping[str, Any] | None, what: str) -> tuple[Any, dict[str, Any]]:
    """Validate ``spec`` with its plugin's Config -> (entry, full spec with every parameter's value).

    Errors are one line naming ``what`` (the flag or job key), the plugin, where it comes from, and
    a close match for a misspelled parameter.
    """
    if not spec or "name" not in spec:
        raise ValueError(f"{what}: parameters {sorted(spec or {})} given but no plugin name; add --{what} NAME")
    try:
        entry, cfg = registry.validate(spec)
    except (ValidationError, ValidationErrorLike) as exc:
        entry = registry.get(spec["name"])
        raise ValueError(f"{what} {entry.name!r} ({entry.origin}): " + config_errors(exc, entry.config)) from None
    full = {"name": entry.name, **(cfg.model_dump(mode="json") if cfg is not None else {})}
    return entry, full


#: the prefix pydantic puts before a validator's own message (``raise ValueError(...)`` in a field validator)
VALIDATOR_PREFIXES = ("Value error, ", "Assertion failed, ")


def config_errors(exc: Any, model: type[BaseModel] | None) -> str:
    """pydantic errors -> ``key: problem; key: problem`` in one line, with close-match hints and the valid
    keys (``model``: the validated class, None when unknown). A validator's own message comes out as
    written: without pydantic's ``Value error,`` and without a second ``(got ...)`` when it names the value."""
    parts = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        key = ".".join(str(p) for p in loc) or "value"
        if err.get("type") == "extra_forbidden" and model is not None:
            holder = model_at(model, loc[:-1])  # the (nested) model the key was given to
            known = ", ".join(holder.model_fields) if holder is not None else "none"
            parts.append(f"{key}: unknown parameter.{close_key_hint(model, loc)} Parameters: {known}")
        elif err.get("type") == "extra_forbidden":
            parts.append(f"{key}: unknown parameter")
        elif err.get("type") == "missing":
            parts.append(f"{key}: required")
        else:
            msg, got = str(err.get("msg", "invalid")), err.get("input")
            own = next((msg[len(p):] for p in VALIDATOR_PREFIXES if msg.startswith(p)), None)  # a validator's
            if own is not None and repr(got) in own:
                parts.append(f"{key}: {own}")
            else:
                parts.append(f"{key}: {own if own is not None else msg} (got {got!r})")
    return "; ".join(parts)


def describe_model(model: type[BaseModel] | None, indent: str = "  ", prefix: str = "",
                   defaults: BaseModel | None = None) -> list[str]:
    """One line per field: ``name: type = default  description`` (for ``--describe`` and ``bench show``);
    a field that is itself a model lists its fields with dotted names (``quick.seeds``), as ``--set`` takes
    them, with the values of that field's default (``defaults``), not of the nested class."""
    if model is None or not model.model_fields:
        return [f"{indent}(no parameters)"]
    lines = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        desc = f"  {field.description}" if field.description else ""
        value = None if field.is_required() else (
            getattr(defaults, name) if defaults is not None else field.get_default(call_default_factory=True))
        if isinstance(value, BaseModel) and type(value).model_config.get("extra") != "allow":  # not a plugin spec
            lines.append(f"{indent}{prefix}{name}:{desc}")
            lines.extend(describe_model(type(value), indent + "  ", f"{prefix}{name}.", value))
            continue
        default = "required" if field.is_required() else f"= {_short(value)}"
        # pydantic moves a top-level FilePath's marker into field.metadata (inside Optional it stays)
        kind = "file" if any("path_type='file'" in repr(m) for m in field.metadata) else type_name(ann)
        lines.append(f"{indent}{prefix}{name}: {kind} {default}{desc}")
    return lines


def type_name(ann: Any) -> str:
    """A readable type: ``fvdm | vanilla_replacement``, ``float | None``, ``file``, ``list[int]``."""
    import typing
    from pathlib import Path

    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin is typing.Annotated:
        meta = " ".join(str(m) for m in args[1:])
        return "file" if args[0] is Path and "file" in meta else type_name(args[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(type_name(a) for a in args)
    if ann is type(None):
        return "None"
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(type_name(a) for a in args)}]"
    return getattr(ann, "__name__", str(ann))


def _short(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"
