"""The operator's side of the worker: commands and views that run beside it, never inside a call."""
