"""The central coordinator: REST API, database, inventory and the durable job engine."""
