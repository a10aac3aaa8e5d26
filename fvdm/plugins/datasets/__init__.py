"""Built-in datasets plugins (filled by their issue)."""
