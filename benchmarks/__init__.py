"""Benchmarks that print the figures of docs/benchmarks.md: run each as `python -m benchmarks.NAME` from the
repository root."""
