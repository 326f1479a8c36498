"""Benchmarks for Bayou, run side by side with peer brokers (see bench/README.md)."""
