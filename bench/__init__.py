"""Benchmarks: scripts that print figures and write them as JSON; never part of the pass/fail
suite. Run each one as `uv run python bench/<name>.py` from the repository root (the scripts put
the repository root on `sys.path` themselves, so `agent`, `tests.support` and `bench` import)."""
