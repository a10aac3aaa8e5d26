"""fvdm core: interfaces, registries, hook specs, plugin manager, configs, helpers.

Core never imports a plugin module; the plugin manager wires built-ins in by name.
"""

from fvdm.core.errors import ConfigError, DuplicatePluginError, FvdmError, PluginUnavailableError, UnknownPluginError
from fvdm.core.hookspecs import hookimpl, hookspec
from fvdm.core.interfaces import PluginConfig
from fvdm.core.plugins import FvdmPlugins, load_plugins
from fvdm.core.registry import KINDS, Availability, Entry, Registry
from fvdm.core.tensor import append_dims, check_timesteps, check_video

__all__ = [
    "Availability", "ConfigError", "DuplicatePluginError", "Entry", "FvdmError", "FvdmPlugins", "KINDS",
    "PluginConfig", "PluginUnavailableError", "Registry", "UnknownPluginError", "append_dims",
    "check_timesteps", "check_video", "hookimpl", "hookspec", "load_plugins",
]
