"""Benchmarks of the request path, each reported as a ratio against a baseline measured in the same run.

`python -m bench.run` (or `make bench`); see bench/README.md for what each figure means.
"""
