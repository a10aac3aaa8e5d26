"""The plugin manager factory.

``load_plugins()`` builds a fresh ``pluggy.PluginManager("fvdm")`` (no module
global), registers the built-in plugins and then the entry points of group
``fvdm`` one at a time through the same function, and fills one typed registry per
kind by calling each plugin's hooks separately, so every entry knows its origin and
a broken plugin is recorded and skipped instead of taking the others down.

Environment:
  FVDM_STRICT_PLUGINS=1            re-raise the first plugin error
  FVDM_DISABLE_PLUGIN_AUTOLOAD=1   load built-ins only (no entry points)
  FVDM_BLOCK_PLUGINS=a,b           plugin names to skip (built-in or entry point)
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import os
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterable

import pluggy

from fvdm.core.errors import PluginLoadError
from fvdm.core.hookspecs import PROJECT, FvdmHookSpecs
from fvdm.core.registry import KINDS, Registries

ENTRY_POINT_GROUP = "fvdm"

#: The built-in plugins: plugin name -> module holding its ``@hookimpl`` functions. Names, not
#: imports (as pytest lists its own plugins): core stays importable without any plugin module,
#: and each is imported, registered and blockable exactly like a third-party entry point.
BUILTIN_PLUGINS: dict[str, str] = {
    "fvdm.noise_schedules": "fvdm.plugins.noise_schedules",
    "fvdm.vtv": "fvdm.plugins.vtv",
    "fvdm.backbones": "fvdm.plugins.backbones",
    "fvdm.backbones_wan": "fvdm.plugins.backbones.wan",
    "fvdm.autoencoders": "fvdm.plugins.autoencoders",
    "fvdm.text_encoders": "fvdm.plugins.text_encoders",
    "fvdm.attention": "fvdm.plugins.attention",
    "fvdm.samplers": "fvdm.plugins.samplers",
    "fvdm.sampling_schedules": "fvdm.plugins.sampling_schedules",
    "fvdm.tasks": "fvdm.tasks",
    "fvdm.datasets": "fvdm.plugins.datasets",
    "fvdm.evaluators": "fvdm.plugins.evaluators",
    "fvdm.benchmarks": "fvdm.bench",
}

#: every hook name the spec has (a plugin implementing another one is refused whole)
HOOK_NAMES: tuple[str, ...] = tuple(f"fvdm_register_{k}" for k in KINDS) + ("fvdm_choose_attention_kernel",)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass
class PluginRecord:
    """What happened to one plugin: loaded, blocked or failed (with the error)."""

    name: str
    origin: str  # "builtin" or "<dist> <version>"
    module: str
    status: str  # "loaded" | "blocked" | "failed"
    error: str = ""
    stage: str = ""  # "import" | "register" | "hook:<name>"

    def to_json(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in ("name", "origin", "module", "status", "error", "stage")}


@dataclass
class FvdmPlugins:
    """A loaded plugin manager with its registries and per-plugin load records."""

    pm: pluggy.PluginManager
    registries: Registries
    records: list[PluginRecord] = field(default_factory=list)

    def __getitem__(self, kind: str) -> Any:
        return self.registries[kind]

    def __getattr__(self, kind: str) -> Any:
        if kind.startswith("_") or kind not in KINDS:
            raise AttributeError(kind)
        return self.registries[kind]

    @property
    def failed(self) -> list[PluginRecord]:
        return [r for r in self.records if r.status == "failed"]

    def origin(self, kind: str, name: str) -> str:
        """Where item ``name`` of ``kind`` comes from: ``"builtin"``, ``"<distribution> <version>"`` or
        ``"local"`` (an unknown name raises ``UnknownPluginError``, naming plugins that failed to load)."""
        return self.registries.origin(kind, name)

    def choose_attention_kernel(self, device: Any, dtype: Any) -> str | None:
        return self.pm.hook.fvdm_choose_attention_kernel(
            device=device, dtype=dtype, registry=self.registries["attention_kernels"]
        )


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(FvdmHookSpecs)
    return pm


def _fail(records: list[PluginRecord], rec: PluginRecord, exc: BaseException, stage: str, strict: bool) -> None:
    rec.status = "failed"
    rec.stage = stage
    rec.error = f"{type(exc).__name__}: {exc}"
    records.append(rec)
    if strict:
        raise PluginLoadError(
            f"plugin {rec.name!r} ({rec.origin}, module {rec.module}) failed at {stage}: {rec.error}"
        ) from exc


def _register_one(
    pm: pluggy.PluginManager,
    records: list[PluginRecord],
    name: str,
    origin: str,
    module: str,
    load: Any,
    blocked: set[str],
    strict: bool,
) -> None:
    """Import one plugin (``load()`` returns the plugin object) and register it."""
    rec = PluginRecord(name=name, origin=origin, module=module, status="loaded")
    if name in blocked:
        pm.set_blocked(name)
        rec.status = "blocked"
        records.append(rec)
        return
    try:
        plugin = load()
    except (Exception, SystemExit) as exc:  # a plugin calling sys.exit() on import must not end the host
        _fail(records, rec, exc, "import", strict)
        return
    try:
        pm.register(plugin, name=name)
    except Exception as exc:  # e.g. a hookimpl whose arguments do not match the spec
        _fail(records, rec, exc, "register", strict)
        return
    records.append(rec)


def _iter_entry_points() -> Iterable[md.EntryPoint]:
    eps = md.entry_points()
    return eps.select(group=ENTRY_POINT_GROUP) if hasattr(eps, "select") else eps.get(ENTRY_POINT_GROUP, [])


def load_plugins(
    *,
    builtins: bool = True,
    entry_points: bool | None = None,
    extra_plugins: Iterable[tuple[str, Any]] = (),
    block: Iterable[str] = (),
    strict: bool | None = None,
) -> FvdmPlugins:
    """Build a fresh plugin manager and fill the registries.

    ``extra_plugins`` are ``(name, plugin_object)`` pairs registered after the
    built-ins, as tests and notebooks do. ``block`` adds to ``FVDM_BLOCK_PLUGINS``.
    """
    strict = _env_flag("FVDM_STRICT_PLUGINS") if strict is None else strict
    if entry_points is None:
        entry_points = not _env_flag("FVDM_DISABLE_PLUGIN_AUTOLOAD")
    blocked = {b.strip() for b in os.environ.get("FVDM_BLOCK_PLUGINS", "").split(",") if b.strip()}
    blocked |= set(block)

    pm = new_plugin_manager()
    records: list[PluginRecord] = []
    origins: dict[str, str] = {}

    if builtins:
        for name, module in BUILTIN_PLUGINS.items():
            origins[name] = "builtin"
            _register_one(pm, records, name, "builtin", module,
                          lambda m=module: importlib.import_module(m), blocked, strict)

    if entry_points:
        for ep in sorted(_iter_entry_points(), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            origin = f"{dist.name} {dist.version}" if dist is not None else "entry point"
            if ep.name in origins:
                rec = PluginRecord(ep.name, origin, ep.value, "failed", stage="register",
                                   error=f"plugin name {ep.name!r} is already used by {origins[ep.name]}; "
                                         "rename the entry point")
                records.append(rec)
                if strict:
                    raise PluginLoadError(rec.error)
                continue
            origins[ep.name] = origin
            _register_one(pm, records, ep.name, origin, ep.value, ep.load, blocked, strict)

    for name, obj in extra_plugins:
        origins[name] = "local"
        _register_one(pm, records, name, "local", getattr(obj, "__name__", type(obj).__name__),
                      lambda o=obj: o, blocked, strict)

    # Misspelled hook names (fvdm_register_backbone) would otherwise be ignored silently.
    _check_pending(pm, records, origins, strict)

    registries = Registries()
    rec_by_name = {r.name: r for r in records}
    for kind in KINDS:
        registry = registries[kind]
        caller = getattr(pm.hook, f"fvdm_register_{kind}")
        # Built-ins first whatever the hook ordering (tryfirst/trylast), so a third-party plugin that adds a
        # built-in's name is the one that fails as the duplicate; otherwise registration order.
        impls = sorted(caller.get_hookimpls(), key=lambda i: origins.get(i.plugin_name) != "builtin")
        for impl in impls:
            registry.current_plugin = impl.plugin_name
            registry.current_origin = origins.get(impl.plugin_name, "local")
            try:
                impl.function(registry=registry)
            except (Exception, SystemExit) as exc:
                registry.remove_plugin(impl.plugin_name)  # nothing half-registered survives
                rec = rec_by_name.get(impl.plugin_name)
                if rec is None:
                    rec = PluginRecord(impl.plugin_name, registry.current_origin, "?", "loaded")
                    records.append(rec)
                    rec_by_name[rec.name] = rec
                rec.status = "failed"
                rec.stage = f"hook:fvdm_register_{kind}"
                rec.error = f"{type(exc).__name__}: {exc}"
                if strict:
                    raise PluginLoadError(
                        f"plugin {impl.plugin_name!r} failed in fvdm_register_{kind}: {rec.error}\n"
                        + traceback.format_exc()
                    ) from exc
        registry.current_plugin = registry.current_origin = "unknown"
    for kind in KINDS:  # an unknown name is most often an item of a plugin that did not load: say which
        registries[kind].load_failures = [
            f"{r.name} ({r.origin}): {(r.error.splitlines() or [''])[0]}" for r in records
            if r.status == "failed" and (not r.stage.startswith("hook:") or r.stage == f"hook:fvdm_register_{kind}")]
    return FvdmPlugins(pm=pm, registries=registries, records=records)


def unknown_hooks_message(hooks: list[str]) -> str:
    """``unknown hook 'fvdm_register_task': did you mean fvdm_register_tasks?`` for each name, and the rule."""
    parts = []
    for hook in hooks:
        close = difflib.get_close_matches(hook, HOOK_NAMES, n=1, cutoff=0.6)
        parts.append(f"unknown hook {hook!r}" + (f": did you mean {close[0]}?" if close else ""))
    rule = "hook names are fvdm_register_<kind> and fvdm_choose_attention_kernel"
    if not all(difflib.get_close_matches(h, HOOK_NAMES, n=1, cutoff=0.6) for h in hooks):
        rule += f"; kinds: {', '.join(KINDS)}"
    return "; ".join(parts) + f" ({rule})"


def _check_pending(pm: pluggy.PluginManager, records: list[PluginRecord], origins: dict[str, str], strict: bool) -> None:
    """Unregister and record each plugin implementing a hook the spec lacks (a misspelled name such as
    ``fvdm_register_task`` would otherwise be ignored), naming the hook it most likely meant."""
    for _ in range(1000):
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            bad = exc.plugin
            name = pm.get_name(bad) or "?"
            hooks = sorted(c.name for c in (pm.get_hookcallers(bad) or []) if not c.has_spec())
            msg = unknown_hooks_message(hooks) if hooks else str(exc)
            if strict:
                raise PluginLoadError(f"plugin {name!r}: {msg}") from exc
            pm.unregister(bad)
            rec = next((r for r in records if r.name == name), None)
            if rec is None:
                rec = PluginRecord(name, origins.get(name, "?"), "?", "loaded")
                records.append(rec)
            rec.status, rec.stage, rec.error = "failed", "check_pending", msg
