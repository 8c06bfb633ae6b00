"""Benchmark and scoring commands (run from the repository root: python -m benchmarks.<name>)."""
