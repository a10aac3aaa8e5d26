"""Benchmark suites (speed, digits_zero_shot, dataset protocols)."""
