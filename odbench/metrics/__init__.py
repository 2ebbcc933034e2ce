"""Metric core: pure functions, streaming accumulators and evaluation protocols."""
