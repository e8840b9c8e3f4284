"""What PVE's named string formats ("format": "pve-node", "dns-name", "pve-qm-ipconfig" ...) accept.

Each check follows its Perl original, with the same die message: pve-common PVE/JSONSchema.pm
(register_format), pve-storage, and qemu-server for the property-string formats qemu-server
registers by name (cpu, boot, ipconfig, rng), whose sub-keys apidata does not spell out.
A format is either a function of the text (raises FormatError) or a HashFormat: a property
string whose sub-keys have schemas of their own (checked by shared.pve_schema).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.errors import PvesphereError


class FormatError(PvesphereError):
    """A format check failed; str() is the Perl die message including its newline."""


@dataclass(frozen=True)
class HashFormat:
    """A property-string format registered by name, with an optional check of the parsed whole."""

    props: dict[str, dict[str, Any]]
    validate: Callable[[dict[str, Any]], None] | None = None


FormatFn = Callable[[str], None]
FORMATS: dict[str, FormatFn | HashFormat] = {}

CONFIGID_RE = re.compile(r"[a-z][a-z0-9_-]+", re.I)
STORAGE_ID_RE = re.compile(r"[a-z][a-z0-9\-_.]*[a-z0-9]", re.I)
VOLUME_ID_RE = re.compile(r"([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)", re.I | re.S)
NODE_RE = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?")
DNS_PART = r"([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)"
TAG_RE = re.compile(r"[a-z0-9_][a-z0-9_\-+.]*", re.I)
# dir plugin content types (pve-storage DirPlugin plugindata), which include all others
CONTENT_TYPES = ("images", "rootdir", "vztmpl", "iso", "backup", "snippets", "none", "import")
# qemu-server Drive.pm: the drive names a VM can have
DRIVE_BUSES = (("ide", 4), ("scsi", 31), ("virtio", 16), ("sata", 6))
DRIVE_NAMES: tuple[str, ...] = tuple(f"{bus}{i}" for bus, count in DRIVE_BUSES for i in range(count)) + (
    "efidisk0",
    "tpmstate0",
)


def _fmt(name: str) -> Callable[[FormatFn], FormatFn]:
    def deco(fn: FormatFn) -> FormatFn:
        FORMATS[name] = fn
        return fn

    return deco


# ---------------------------------------------------------------------------------------------
# pve-common JSONSchema.pm and pve-storage


@_fmt("pve-node")
def _pve_node(v: str) -> None:
    if not NODE_RE.fullmatch(v):
        raise FormatError("value does not look like a valid node name\n")


@_fmt("pve-vmid")
def _pve_vmid(v: str) -> None:
    if not re.fullmatch(r"[1-9][0-9]{2,8}", v):
        raise FormatError("value does not look like a valid VM ID\n")


@_fmt("pve-storage-id")
def _pve_storage_id(v: str) -> None:
    if len(v) < 2:
        raise FormatError(f"storage ID '{v}' cannot be shorter than 2 characters\n")
    if not STORAGE_ID_RE.fullmatch(v):
        raise FormatError(f"storage ID '{v}' contains illegal characters\n")


@_fmt("pve-storage-content")
def _pve_storage_content(v: str) -> None:
    if v not in CONTENT_TYPES:
        raise FormatError(f"invalid content type '{v}'\n")


@_fmt("pve-configid")
def _pve_configid(v: str) -> None:
    if not CONFIGID_RE.fullmatch(v):
        raise FormatError(f"invalid configuration ID '{v}'\n")


@_fmt("pve-volume-id")
def _pve_volume_id(v: str) -> None:
    if not VOLUME_ID_RE.fullmatch(v):
        raise FormatError(f"unable to parse volume ID '{v}'\n")


@_fmt("pve-volume-id-or-absolute-path")
def _volid_or_path(v: str) -> None:
    if not v.startswith("/"):
        _pve_volume_id(v)


@_fmt("pve-volume-id-or-qm-path")
def _volid_or_qm_path(v: str) -> None:
    if v not in ("none", "cdrom"):
        _volid_or_path(v)


@_fmt("disk-size")
def _disk_size(v: str) -> None:
    if parse_size(v) is None:
        raise FormatError(f"value does not look like a valid disk size: {v}\n")


@_fmt("dns-name")
def _dns_name(v: str) -> None:
    if not re.fullmatch(rf"({DNS_PART}\.)*{DNS_PART}", v):
        raise FormatError("value does not look like a valid DNS name\n")


@_fmt("urlencoded")
def _urlencoded(v: str) -> None:
    if not re.fullmatch(r"[-%a-zA-Z0-9_.!~*'()]*", v):
        raise FormatError(f"invalid urlencoded string: {v}\n")


@_fmt("pve-tag")
def _pve_tag(v: str) -> None:
    if not TAG_RE.fullmatch(v):
        raise FormatError("invalid characters in tag\n")


@_fmt("pve-task-status-type")
def _task_status_type(v: str) -> None:
    if not re.fullmatch(r"ok|error|warning|unknown", v, re.I):
        raise FormatError(f"invalid status '{v}'\n")


@_fmt("pve-poolid")
def _pve_poolid(v: str) -> None:
    if len(v.split("/")) > 3:
        raise FormatError(f"pool name '{v}' nested too deeply (max levels = 3)\n")
    if not re.fullmatch(r"[A-Za-z0-9.\-_]+(?:/[A-Za-z0-9.\-_]+){0,2}", v):
        raise FormatError(f"pool name '{v}' contains invalid characters\n")


@_fmt("pve-bridge-id")
def _pve_bridge_id(v: str) -> None:
    if not re.fullmatch(r"[-_.\w\d]+", v):
        raise FormatError(f"invalid bridge ID '{v}'\n")


@_fmt("mac-addr")
def _mac_addr(v: str) -> None:
    if not re.fullmatch(r"[a-f0-9][02468ace](?::[a-f0-9]{2}){5}", v, re.I):
        raise FormatError("value does not look like a valid unicast MAC address\n")


@_fmt("pve-startup-order")
def _startup_order(v: str) -> None:
    for part in v.split(","):
        if part.strip() and not re.fullmatch(r"(order=)?\d+|up=\d+|down=\d+", part):
            raise FormatError("unable to parse startup options\n")


def _is_ip(v: str, version: int) -> bool:
    # ParseUtils.pm's IPV4RE/IPV6RE: plain addresses (no leading zeros, no zone index)
    if "%" in v:
        return False
    try:
        return ipaddress.ip_address(v).version == version
    except ValueError:
        return False


def _is_cidr(v: str, version: int) -> bool:
    address, sep, bits = v.partition("/")
    if not sep or not re.fullmatch(r"\d+", bits) or not _is_ip(address, version):
        return False
    return 7 < int(bits) <= (32 if version == 4 else 128)


@_fmt("ipv4")
def _ipv4(v: str) -> None:
    if not _is_ip(v, 4):
        raise FormatError("value does not look like a valid IPv4 address\n")


@_fmt("ipv6")
def _ipv6(v: str) -> None:
    if not _is_ip(v, 6):
        raise FormatError("value does not look like a valid IPv6 address\n")


@_fmt("ip")
def _ip(v: str) -> None:
    if not (_is_ip(v, 4) or _is_ip(v, 6)):
        raise FormatError("value does not look like a valid IP address\n")


@_fmt("pve-ipv4-config")
def _ipv4_config(v: str) -> None:
    if v not in ("dhcp", "manual") and not _is_cidr(v, 4):
        raise FormatError("value does not look like a valid ipv4 network configuration\n")


@_fmt("pve-ipv6-config")
def _ipv6_config(v: str) -> None:
    if v not in ("auto", "dhcp", "manual") and not _is_cidr(v, 6):
        raise FormatError("value does not look like a valid ipv6 network configuration\n")


@_fmt("address")
def _address(v: str) -> None:
    try:
        _ip(v)
    except FormatError:
        try:
            _dns_name(v)
        except FormatError:
            raise FormatError(f"value does not look like a valid address: {v}\n") from None


# ---------------------------------------------------------------------------------------------
# qemu-server's registered formats


@_fmt("pve-qm-bootdev")
def _bootdev(v: str) -> None:
    # QemuServer.pm verify_bootdev: a drive (not EFI/TPM state), or a NIC, USB or PCI device
    drive = v in DRIVE_NAMES and not v.startswith(("efidisk", "tpmstate"))
    device = re.fullmatch(r"(net([0-9]|[12][0-9]|3[01])|usb([0-9]|1[0-3])|hostpci([0-9]|1[0-5]))", v)
    if not (drive or device):
        raise FormatError(f"invalid boot device '{v}'\n")


@_fmt("pve-phys-bits")
def _phys_bits(v: str) -> None:
    # CPUConfig.pm parse_phys_bits
    if not re.fullmatch(r"host|\d{1,2}", v) or (v != "host" and not 8 <= int(v) <= 64):
        raise FormatError("value must be an integer between 8 and 64 or 'host'\n")


FORMATS["pve-qm-boot"] = HashFormat(
    {  # QemuServer.pm $boot_fmt
        "legacy": {
            "type": "string",
            "pattern": "[acdn]{1,4}",
            "optional": 1,
            "default_key": 1,
            "default": "cdn",
        },
        "order": {"optional": 1, "type": "string", "format": "pve-qm-bootdev-list"},
    }
)

FORMATS["pve-qm-ipconfig"] = HashFormat(
    {  # QemuServer/Network.pm $ipconfig_fmt
        "ip": {"type": "string", "format": "pve-ipv4-config", "optional": 1, "default": "dhcp"},
        "gw": {"type": "string", "format": "ipv4", "optional": 1, "requires": "ip"},
        "ip6": {"type": "string", "format": "pve-ipv6-config", "optional": 1, "default": "dhcp"},
        "gw6": {"type": "string", "format": "ipv6", "optional": 1, "requires": "ip6"},
    }
)

FORMATS["pve-qm-rng"] = HashFormat(
    {  # QemuServer/RNG.pm $rng_fmt
        "source": {"type": "string", "enum": ["/dev/urandom", "/dev/random", "/dev/hwrng"], "default_key": 1},
        "max_bytes": {"type": "integer", "optional": 1, "default": 1024},
        "period": {"type": "integer", "optional": 1, "default": 1000},
    }
)

# CPUFlags.pm: the flags a VM's own cpu option may set (custom CPU models may set any)
VM_CPU_FLAGS = (
    "aes",
    "amd-no-ssb",
    "amd-ssbd",
    "hv-evmcs",
    "hv-tlbflush",
    "ibpb",
    "md-clear",
    "nested-virt",
    "pcid",
    "pdpe1gb",
    "spec-ctrl",
    "ssbd",
    "virt-ssbd",
)
_CPU_FLAG_ANY = r"([+-])([a-zA-Z0-9\-_\.]+)"
_CPU_FLAG_VM = rf"([+-])({'|'.join(re.escape(f) for f in VM_CPU_FLAGS)})"


def _validate_vm_cpu_conf(cpu: dict[str, Any]) -> None:
    # CPUConfig.pm validate_vm_cpu_conf (which CPU models exist depends on the node's QEMU:
    # left to PVE)
    if not cpu.get("cputype"):
        raise FormatError("CPU is missing cputype\n")
    flags = cpu.get("flags")
    if flags and not re.fullmatch(rf"{_CPU_FLAG_VM}(;{_CPU_FLAG_VM})*", flags):
        raise FormatError(f"VM-specific CPU flags must be a subset of: {', '.join(VM_CPU_FLAGS)}\n")
    if cpu.get("reported-model") is not None:
        raise FormatError("Property 'reported-model' not allowed in VM-specific CPU config.\n")


FORMATS["pve-vm-cpu-conf"] = HashFormat(
    {  # CPUConfig.pm $cpu_fmt, the properties apidata-v9's typetext names
        "cputype": {"type": "string", "default": "kvm64", "default_key": 1, "optional": 1},
        "reported-model": {"type": "string", "optional": 1},
        "hidden": {"type": "boolean", "optional": 1, "default": 0},
        "hv-vendor-id": {"type": "string", "pattern": "[a-zA-Z0-9]{1,12}", "optional": 1},
        "flags": {"type": "string", "pattern": f"{_CPU_FLAG_ANY}(;{_CPU_FLAG_ANY})*", "optional": 1},
        "guest-phys-bits": {"type": "integer", "minimum": 32, "maximum": 64, "optional": 1},
        "phys-bits": {"type": "string", "format": "pve-phys-bits", "optional": 1},
    },
    _validate_vm_cpu_conf,
)


# ---------------------------------------------------------------------------------------------
# helpers the formats share (PVE::Tools, PVE::JSONSchema)


def split_list(text: str) -> list[str]:
    """PVE::Tools::split_list."""
    if "\0" in text:
        return text.split("\0")
    return [p for p in re.split(r"\s+", re.sub(r"[,;]", " ", text).strip()) if p]


def parse_size(value: str) -> int | None:
    """PVE::JSONSchema::parse_size: '2G', '512M', '1024' (bytes) ..."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT](?:iB)?)?", value)
    if not m:
        return None
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    unit = (m.group(2) or "")[:1]
    return int(float(m.group(1)) * mult.get(unit, 1))


def format_size(size: int) -> str:
    """PVE::JSONSchema::format_size: the largest unit that divides the size exactly."""
    size = int(size)
    for unit in ("", "K", "M", "G"):
        if size % 1024:
            return f"{size}{unit}"
        size //= 1024
    return f"{size}T"


def lookup(fmt: str) -> tuple[FormatFn | HashFormat | None, str | None]:
    """(the format, 'list' | 'opt' | None) for a format name like 'pve-tag-list'."""
    m = re.fullmatch(r"(.*?)(?:-(list|opt))?", fmt)
    assert m
    found = FORMATS.get(fmt)
    if found is not None:
        return found, None
    return FORMATS.get(m.group(1)), m.group(2)
