"""Runnable examples for the tutorials in docs/ (load them as `examples.<module>:<Class>`)."""
