"""Code both the coordinator and the agents use: config, logging, wire formats."""
