"""Data: datasets, splits, mappers, image I/O and the built-in synthetic data set."""
