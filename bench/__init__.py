"""Benchmarks of the pack; each is run as a module from the repository root: ``python -m bench.<name>``."""
