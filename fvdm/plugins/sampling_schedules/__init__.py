"""Built-in sampling_schedules plugins (filled by their issue)."""
