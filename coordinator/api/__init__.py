"""The REST API of api-contract.md: one module per resource, plus the plumbing they share."""
