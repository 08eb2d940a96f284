"""Benchmarks of drift against baselines measured in the same run (``drift bench``)."""
