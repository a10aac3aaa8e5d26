"""Built-in attention plugins (filled by their issue)."""
