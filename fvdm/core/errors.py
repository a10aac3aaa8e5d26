"""Error types raised at fvdm's boundaries."""


class FvdmError(Exception):
    """Base class: every message names the problem and the fix."""


class UnknownPluginError(FvdmError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DuplicatePluginError(FvdmError, ValueError):
    pass


class PluginUnavailableError(FvdmError, RuntimeError):
    pass


class PluginLoadError(FvdmError, RuntimeError):
    pass


class ConfigError(FvdmError, ValueError):
    """A config failed validation; ``errors`` is a list of (path, message)."""

    def __init__(self, errors: list[tuple[str, str]], source: str | None = None):
        self.errors = errors
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"{len(errors)} config error(s){where}:"] + [f"  {p}: {m}" for p, m in errors]
        super().__init__("\n".join(lines))


class DataError(FvdmError, RuntimeError):
    """A dataset cannot deliver usable clips (every video/shard unusable, a sample refused with on_error: raise)."""


_warned: set[str] = set()


def warn_once(key: str, msg: str) -> None:
    """A RuntimeWarning the first time ``key`` is seen in this process (a per-step problem is said once)."""
    import warnings

    if key not in _warned:
        _warned.add(key)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
