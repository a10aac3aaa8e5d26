"""Example fvdm plugin package (see fvdm's docs/plugins.md)."""

__version__ = "0.1.0"
