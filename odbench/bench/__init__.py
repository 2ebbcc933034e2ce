"""Benchmarks behind ``odbench bench NAME``: speed as ratios against a reference run in the same process."""
