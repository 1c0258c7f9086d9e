"""Benchmark scripts for taskd (see bench/throughput.py). Not part of the installed package."""
