"""Typed registries: one per plugin kind, filled by ``fvdm_register_<kind>`` hooks.

A plugin calls ``registry.add(name, obj, config=..., extra=..., available=..., aliases=...)``.
The host builds objects by name with ``registry.build({"name": ..., **params}, plugins=...)``:
the params are validated by the plugin's own pydantic ``Config`` and the object is
constructed as ``obj(cfg)``, or ``obj(cfg, plugins=plugins)`` when its constructor
declares a ``plugins`` parameter (a plugin that builds other plugins gets the
plugin manager from its caller instead of loading one behind the caller's back).
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

from pydantic import BaseModel, ValidationError

from fvdm.core.errors import DuplicatePluginError, PluginUnavailableError, UnknownPluginError

T = TypeVar("T")

#: The plugin kinds; each has a hook ``fvdm_register_<kind>(registry)``.
KINDS: tuple[str, ...] = (
    "backbones",
    "noise_schedules",
    "vtv_strategies",
    "samplers",
    "sampling_schedules",
    "tasks",
    "datasets",
    "attention_kernels",
    "evaluators",
    "feature_extractors",
    "benchmarks",
    "autoencoders",
    "text_encoders",
)

@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


AvailabilityFn = Callable[..., "Availability | tuple[bool, str] | bool"]


@dataclass
class Entry(Generic[T]):
    """One registered item and where it came from."""

    kind: str
    name: str
    obj: T
    origin: str  # "builtin" or "<distribution> <version>" or "test"
    plugin: str  # the pluggy plugin name that registered it
    config: type[BaseModel] | None = None
    extra: str | None = None  # e.g. "xformers": pip install 'fvdm[xformers]'
    description: str = ""
    available_fn: AvailabilityFn | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)  # other names that look this entry up

    def availability(self, **ctx: Any) -> Availability:
        """Whether this item can run, decided now (per call) for the given context.

        ``ctx`` may carry ``device`` and ``dtype``; an availability function that does
        not take them is called without.
        """
        if self.available_fn is None:
            return Availability(True, "")
        try:
            try:
                res = self.available_fn(**ctx)
            except TypeError:
                res = self.available_fn()
        except Exception as exc:  # a probe that crashes means "not available", with why
            return Availability(False, f"availability check raised {type(exc).__name__}: {exc}")
        if isinstance(res, Availability):
            return res
        if isinstance(res, tuple):
            return Availability(bool(res[0]), str(res[1]))
        return Availability(bool(res), "" if res else "not available")

    def install_hint(self) -> str:
        return f"pip install 'fvdm[{self.extra}]'" if self.extra else ""

    def to_json(self, **ctx: Any) -> dict[str, Any]:
        av = self.availability(**ctx)
        return {
            "name": self.name,
            "origin": self.origin,
            "plugin": self.plugin,
            "available": av.ok,
            "reason": av.reason,
            "extra": self.extra,
            "description": self.description,
            "has_config": self.config is not None,
            "aliases": list(self.aliases),
        }


class Registry(Generic[T]):
    """Name -> Entry for one plugin kind."""

    def __init__(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"unknown plugin kind {kind!r}; kinds are {', '.join(KINDS)}")
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}  # alias -> registered name
        # Set by the plugin manager while one plugin's hook runs.
        self.current_origin = "unknown"
        self.current_plugin = "unknown"
        #: ``"NAME (origin): reason"`` of each plugin that failed to load and may have held this kind's names;
        #: set by the plugin manager, appended to unknown-name errors (a typo in a plugin is the likely cause)
        self.load_failures: list[str] = []

    # -- registration -------------------------------------------------------------
    def add(
        self,
        name: str,
        obj: T,
        *,
        config: type[BaseModel] | None | str = "auto",
        extra: str | None = None,
        description: str | None = None,
        available: AvailabilityFn | None = None,
        aliases: tuple[str, ...] = (),
    ) -> Entry[T]:
        """Register ``obj`` under ``name``.

        ``config`` defaults to ``obj.Config`` when present. ``extra`` names the
        ``fvdm[...]`` extra the item needs. ``available`` is a function returning
        ``(ok, reason)``, called whenever availability is asked (per call, not at
        import), with optional ``device``/``dtype`` keywords. ``aliases`` are other
        names that look the same entry up (a protocol's long name, an old name); they
        share the namespace of names, so an alias can never shadow another entry.
        """
        for n in (name, *aliases):
            if not isinstance(n, str) or not n or any(c in n for c in "*?[] "):
                raise ValueError(f"{self.kind}: invalid plugin name {n!r} (non-empty, no spaces or wildcards)")
            if n in self:
                old = self.get(n)
                raise DuplicatePluginError(
                    f"{self.kind} {n!r} registered twice: first by {old.plugin} ({old.origin}), "
                    f"again by {self.current_plugin} ({self.current_origin}). "
                    "Rename one, or block one plugin with FVDM_BLOCK_PLUGINS=<plugin name>."
                )
        if config == "auto":
            config = getattr(obj, "Config", None)
        if config is not None and not (isinstance(config, type) and issubclass(config, BaseModel)):
            raise TypeError(f"{self.kind} {name!r}: config must be a pydantic BaseModel subclass, got {config!r}")
        if description is None:
            doc = (getattr(obj, "__doc__", None) or "").strip()
            description = doc.splitlines()[0] if doc else ""
        entry = Entry(
            kind=self.kind,
            name=name,
            obj=obj,
            origin=self.current_origin,
            plugin=self.current_plugin,
            config=config,  # type: ignore[arg-type]
            extra=extra,
            description=description,
            available_fn=available,
            aliases=tuple(aliases),
        )
        self._entries[name] = entry
        self._aliases.update({a: name for a in aliases})
        return entry

    def remove_plugin(self, plugin: str) -> None:
        for name in [n for n, e in self._entries.items() if e.plugin == plugin]:
            for alias in self._entries.pop(name).aliases:
                self._aliases.pop(alias, None)

    # -- lookup -------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def list(self, pattern: str = "*") -> list[Entry[T]]:
        """Entries whose name matches a shell-style wildcard (``latte_*``)."""
        return [self._entries[n] for n in sorted(self._entries) if fnmatch.fnmatchcase(n, pattern)]

    def search(self, query: str = "*") -> list[Entry[T]]:
        """``list(query)`` for a wildcard; otherwise entries whose name or description contains ``query``
        (case-insensitive), so ``fvdm plugins latte`` finds what a user would expect."""
        if any(c in query for c in "*?["):
            return self.list(query)
        q = query.lower()
        return [e for e in self.list() if q in e.name.lower() or q in e.description.lower()]

    def unknown_message(self, name: str) -> str:
        names = self.names()
        msg = f"unknown {self.kind} {name!r}."
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        if close:
            msg += f" Did you mean {close[0]!r}?"
        msg += f" Available: {', '.join(names) if names else '(none registered)'}."
        msg += " Run `fvdm plugins --kind " + self.kind + "` to see every item with its origin"
        if self.load_failures:
            return msg + "; plugins that failed to load: " + "; ".join(self.load_failures)
        return msg + "."

    def origin(self, name: str) -> str:
        """Where the item ``name`` (or alias) comes from: ``"builtin"``, ``"<distribution> <version>"`` for an
        installed plugin, ``"local"`` for one passed to ``load_plugins(extra_plugins=...)`` (provenance records)."""
        return self.get(name).origin

    def get(self, name: str) -> Entry[T]:
        """The entry registered under ``name`` or under an alias ``name``."""
        try:
            return self._entries[self._aliases.get(name, name)]
        except KeyError:
            raise UnknownPluginError(self.unknown_message(name)) from None

    def require(self, name: str, **ctx: Any) -> Entry[T]:
        """Like ``get`` but also raise if the item cannot run in ``ctx``."""
        entry = self.get(name)
        av = entry.availability(**ctx)
        if not av:
            hint = f" Install it with: {entry.install_hint()}." if entry.extra else ""
            raise PluginUnavailableError(f"{self.kind} {name!r} is not available: {av.reason}.{hint}")
        return entry

    # -- construction ---------------------------------------------------------------
    def validate(self, spec: "str | Mapping[str, Any]") -> tuple[Entry[T], BaseModel | None]:
        """Second pass of config resolution: name -> entry -> that plugin's Config."""
        name, params = split_spec(spec)
        entry = self.get(name)
        if entry.config is None:
            if params:
                raise ValidationErrorLike(
                    [((k,), f"{self.kind} {name!r} takes no parameters") for k in sorted(params)]
                )
            return entry, None
        return entry, entry.config.model_validate(params)

    def build(self, spec: "str | Mapping[str, Any]", *, plugins: Any = None, **ctx: Any) -> Any:
        """Validate ``spec`` and construct ``obj(cfg)`` (or return ``obj`` when it has no Config).

        ``plugins`` (the plugin manager) is passed on to a constructor that declares a
        ``plugins`` parameter; ``ctx`` (``device``, ``dtype``) goes to the availability check.
        """
        entry, cfg = self.validate(spec)
        return self.instantiate(entry, cfg, plugins=plugins, **ctx)

    def instantiate(self, entry: Entry[T], cfg: BaseModel | None, *, plugins: Any = None, **ctx: Any) -> Any:
        """Construct an entry from an already validated Config (``validate``'s result)."""
        self.require(entry.name, **ctx)
        if cfg is None:
            return entry.obj
        wants = plugins_parameter(entry.obj)
        if wants is None or (plugins is None and wants.default is not inspect.Parameter.empty):
            return entry.obj(cfg)  # type: ignore[operator]
        if plugins is None:
            raise TypeError(f"{self.kind} {entry.name!r} builds other plugins and needs the plugin manager: "
                            "build it with registry.build(spec, plugins=plugins)")
        return entry.obj(cfg, plugins=plugins)  # type: ignore[operator]


def plugins_parameter(obj: Any) -> inspect.Parameter | None:
    """The ``plugins`` parameter of ``obj``'s constructor (it takes the plugin manager), or None."""
    try:
        return inspect.signature(obj).parameters.get("plugins")
    except (TypeError, ValueError):  # builtins and C types without a signature take no plugin manager
        return None


class ValidationErrorLike(ValueError):
    """Raised for params given to a plugin without a Config; carries pydantic-like errors."""

    def __init__(self, errors: list[tuple[tuple[str, ...], str]]):
        self._errors = errors
        super().__init__("; ".join(f"{'.'.join(loc)}: {m}" for loc, m in errors))

    def errors(self) -> list[dict[str, Any]]:
        return [{"loc": loc, "msg": m, "type": "extra_forbidden"} for loc, m in self._errors]


def split_spec(spec: "str | Mapping[str, Any] | BaseModel") -> tuple[str, dict[str, Any]]:
    """``"ddim"`` or ``{"name": "ddim", "eta": 0}`` -> (``"ddim"``, ``{"eta": 0}``)."""
    if isinstance(spec, BaseModel):
        spec = spec.model_dump()
    if isinstance(spec, str):
        return spec, {}
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ValueError(f"a plugin reference must be a name or a mapping with a 'name' key, got {spec!r}")
    params = {k: v for k, v in spec.items() if k != "name"}
    return str(spec["name"]), params


class Registries:
    """All registries of one plugin manager, by kind."""

    def __init__(self) -> None:
        self._by_kind: dict[str, Registry[Any]] = {k: Registry(k) for k in KINDS}

    def __getitem__(self, kind: str) -> Registry[Any]:
        try:
            return self._by_kind[kind]
        except KeyError:
            close = difflib.get_close_matches(kind, KINDS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownPluginError(f"unknown plugin kind {kind!r}.{hint} Kinds: {', '.join(KINDS)}") from None

    def __getattr__(self, kind: str) -> Registry[Any]:
        if kind.startswith("_"):
            raise AttributeError(kind)
        return self[kind]

    def items(self) -> list[tuple[str, Registry[Any]]]:
        return list(self._by_kind.items())

    def origin(self, kind: str, name: str) -> str:
        """``self[kind].origin(name)``: ``"builtin"`` or ``"<distribution> <version>"`` (or ``"local"``)."""
        return self[kind].origin(name)


def is_validation_error(exc: BaseException) -> bool:
    return isinstance(exc, (ValidationError, ValidationErrorLike))
