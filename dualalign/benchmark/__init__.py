"""Benchmarks: the Table 1/2 harness (datasets, runs, report) and the speed benchmark."""
