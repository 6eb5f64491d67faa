"""Benchmarks of Liftoff, run from the repository root as `.venv/bin/python -m bench.<name>` (see bench/README.md)."""
