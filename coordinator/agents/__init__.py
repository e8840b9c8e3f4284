"""The coordinator's view of its agents: who they are, where, and whether they are live."""
