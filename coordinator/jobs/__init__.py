"""Durable jobs: rows in the database, claimed with leases (imports, sync tasks)."""
