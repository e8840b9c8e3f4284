"""Which PVE VM options a template's vm_config may set, and which of their sub-keys and values.

The agent creates every template VM as root, so anything a VM option can point at on the
node must stay out: host files and devices (args, hookscript, hostpci, usb, parallel,
virtiofs, a serial port other than a socket, /dev/hwrng), volumes or snippets of any
storage (cicustom, vmstatestorage, import-from, disks other than the imported one), and
settings that are root's alone (arch) or would stop pvesphere managing the VM (protection,
lock, template). What remains is a cloud template's hardware, OS, boot and cloud-init:

* plain options: whatever PVE's schema accepts (type, enum, pattern, bounds, format);
* property strings (net0, cpu, efidisk0 ...): only the sub-keys named here, each checked by
  PVE's schema; ``narrow`` holds stricter facts for some, ``why`` says why;
* EFI vars, TPM state and a cloud-init drive: new volumes, allocated on the template's own
  storage (``volume``: "new" is STORAGE:SIZE, "cloudinit" is STORAGE:cloudinit).

The schema facts of these options come from PVE's API description: vm_config_facts.json.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from shared import ssh_keys


@dataclass(frozen=True)
class Rule:
    """What vm_config may set for one PVE option (its apidata name, "net[n]" for net0..)."""

    subkeys: frozenset[str] = frozenset()
    # stricter facts than PVE's, by sub-key ("" for the option's own value)
    narrow: dict[str, dict[str, Any]] = field(default_factory=dict)
    why: str = ""
    volume: Literal["new", "cloudinit"] | None = None
    # a check PVE makes on create beyond the schema (raises ValueError)
    check: Callable[[str], None] | None = None


def _sub(*names: str, **narrowed: Any) -> Rule:
    return Rule(frozenset(names), **narrowed)


PLAIN = Rule()
NET_MODELS = (
    "e1000",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
    "rtl8139",
    "virtio",
    "vmxnet3",
)
CLOUDINIT_DRIVE = _sub(
    "file",
    "media",
    narrow={"media": {"enum": ["cdrom"]}},
    why="a drive other than the imported disk can only be a cloud-init drive",
    volume="cloudinit",
)

ALLOWED: dict[str, Rule] = {
    # hardware
    "cores": PLAIN,
    "sockets": PLAIN,
    "vcpus": PLAIN,
    "cpulimit": PLAIN,
    "cpuunits": PLAIN,
    "numa": PLAIN,
    "memory": _sub("current"),
    "balloon": PLAIN,
    "shares": PLAIN,
    "cpu": _sub(
        "cputype",
        "flags",
        "hidden",
        "hv-vendor-id",
        "phys-bits",
        "guest-phys-bits",
        narrow={"cputype": {"pattern": "[A-Za-z0-9][A-Za-z0-9._+-]*"}},
        why="a CPU model name (letters, digits, '._+-'); which models exist is PVE's to say",
    ),
    "machine": _sub("type", "viommu", "aw-bits", "enable-s3", "enable-s4"),
    "bios": PLAIN,
    "scsihw": PLAIN,
    "net[n]": _sub(
        "model", "macaddr", "bridge", "tag", "trunks", "firewall", "link_down", "mtu", "queues", "rate"
    ),
    "vga": _sub("type", "memory", "clipboard"),
    "serial[n]": Rule(
        narrow={"": {"pattern": "socket"}}, why="only 'socket': a host device would be passed through"
    ),
    "rng0": _sub(
        "source",
        "max_bytes",
        "period",
        narrow={"source": {"enum": ["/dev/urandom"]}, "max_bytes": {"minimum": 1}},
        why="only /dev/urandom, rate-limited: another source drains or passes through the host's",
    ),
    "tablet": PLAIN,
    "keyboard": PLAIN,
    "agent": _sub("enabled", "freeze-fs-on-backup", "fstrim_cloned_disks", "type"),
    "efidisk0": _sub("file", "efitype", "pre-enrolled-keys", why="EFI vars are a new volume", volume="new"),
    "tpmstate0": _sub("file", "version", why="TPM state is a new volume", volume="new"),
    # OS and boot
    "name": PLAIN,
    "ostype": PLAIN,
    "boot": _sub("order", "legacy"),
    "kvm": PLAIN,
    "acpi": PLAIN,
    "localtime": PLAIN,
    "onboot": PLAIN,
    "startup": PLAIN,
    "reboot": PLAIN,
    "freeze": PLAIN,
    "tags": PLAIN,
    # cloud-init (its drive: ide/sata/scsi below)
    "ciuser": PLAIN,
    "cipassword": PLAIN,
    "citype": PLAIN,
    "ciupgrade": PLAIN,
    "sshkeys": Rule(check=ssh_keys.check_urlencoded),
    "ipconfig[n]": _sub("ip", "gw", "ip6", "gw6"),
    "nameserver": PLAIN,
    "searchdomain": PLAIN,
    "ide[n]": CLOUDINIT_DRIVE,
    "sata[n]": CLOUDINIT_DRIVE,
    "scsi[n]": CLOUDINIT_DRIVE,
}

# Set by pvesphere for every template: a vm_config cannot change them.
RESERVED = frozenset({"vmid", "scsi0", "description", "template"})
