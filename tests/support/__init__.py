"""Helpers of the tests, not tests: stand-in scripts for benchmark.sh (benchmark_fakes) and a disk that fails on
purpose (write_faults)."""
