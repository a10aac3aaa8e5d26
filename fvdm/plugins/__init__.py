"""Built-in plugins, one algorithm per file. ``fvdm.core.plugins.BUILTIN_PLUGINS`` names each
sub-package here; they register through the same hooks as third-party entry points.
"""
