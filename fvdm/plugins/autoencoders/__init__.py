"""Built-in autoencoders plugins (filled by their issue)."""
