"""Contract tests: the worker's wire formats against oracles written by hand from DESIGN.md."""
