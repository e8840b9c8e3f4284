"""pvesim: a Proxmox VE 9 cluster emulator (HTTPS API + pvesh shim). See README.md."""

# The PVE release whose sources (pve-manager 9.2.11 and the libraries it ships with) the
# emulated behaviour follows; reported by GET /version and GET /nodes/{node}/status.
PVE_VERSION = "9.2.11"
PVE_RELEASE = "9.2"
PVE_REPOID = "14a22df35955d97d"

__all__ = ["PVE_RELEASE", "PVE_REPOID", "PVE_VERSION"]
