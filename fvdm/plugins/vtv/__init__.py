"""Built-in vtv plugins (filled by their issue)."""
