"""Node-to-node image transfer: receive (and relay) on targets, send from sources."""
