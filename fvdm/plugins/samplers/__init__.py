"""Built-in samplers plugins (filled by their issue)."""
