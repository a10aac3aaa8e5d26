"""Built-in backbones plugins (filled by their issue)."""
