"""Benchmarks: each prints figures as ratios to raw steps measured in the same run."""
