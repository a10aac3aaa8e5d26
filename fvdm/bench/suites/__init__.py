"""Built-in benchmark suites: speed, digits_zero_shot, dataset protocols."""
