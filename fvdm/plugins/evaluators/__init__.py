"""Built-in evaluators plugins (filled by their issue)."""
