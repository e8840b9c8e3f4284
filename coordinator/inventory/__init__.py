"""What the coordinator knows about PVE clusters: nodes and storages, read through proxmoxer."""
