"""Baselines: what the same work costs with standard tools, measured in the same run."""
