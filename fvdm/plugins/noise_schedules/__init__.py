"""Built-in noise_schedules plugins (filled by their issue)."""
