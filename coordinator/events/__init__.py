"""Live events (contract 6.4): what changed in the database, pushed to WebSocket subscribers."""
