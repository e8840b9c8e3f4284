"""qemu-server VM configuration files and drive property strings.

Config files use PVE's format (qemu-server write_vm_config/parse_vm_config): the description
as '#' comment lines on top, then `key: value` lines sorted by key. The digest PVE reports is
the SHA-1 of that text.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from pvesim import schema
from pvesim.errors import param_error
from shared.pve_formats import DRIVE_NAMES, FormatError
from shared.pve_schema import parse_boolean, parse_property_string, print_property_string

# Drive.pm: a cloud-init drive's volume name ($QEMU_FORMAT_RE for the suffix)
CLOUDINIT_VOLUME_RE = re.compile(r"[:/](?:vm-\d+-)?cloudinit(?:\.(?:raw|qcow|qcow2|qed|vmdk|cloop))?$")
# "STORAGE:SIZE_IN_GiB" (Drive.pm $NEW_DISK_RE)
NEW_DISK_RE = re.compile(r"^(([^/:\s]+):)?(\d+(\.\d+)?)$")
# parameters of POST /nodes/{node}/qemu that are not VM configuration keys
CREATE_ONLY_PARAMS = frozenset(
    {
        "node",
        "vmid",
        "archive",
        "storage",
        "force",
        "unique",
        "live-restore",
        "pool",
        "bwlimit",
        "start",
        "ha-managed",
        "import-working-storage",
    }
)
_UNSAFE = re.compile(r"[^\x20-\x24\x26-\x39\x3b-\x7e]")


def is_drive(key: str) -> bool:
    return key in DRIVE_NAMES


def encode_text(text: str) -> str:
    """PVE::Tools::encode_text: control, high-bit characters, ':' and '%' URI-escaped."""
    return "".join("".join(f"%{b:02X}" for b in ch.encode()) if _UNSAFE.match(ch) else ch for ch in text)


def decode_text(text: str) -> str:
    return urllib.parse.unquote(text)


def config_schema() -> schema.MethodSchema:
    """VM config keys and their types: those of the create call (json_config_properties)."""
    return schema.load().methods[("/nodes/{node}/qemu", "POST")]


def drive_format(key: str) -> dict[str, Any]:
    prop = config_schema().prop(key)
    if prop is None or not isinstance(prop.get("format"), dict):
        raise KeyError(key)
    return prop["format"]


def parse_drive(key: str, value: str) -> dict[str, Any]:
    """Drive property string to dict (keys as in PVE: file, size, media, import-from ...)."""
    try:
        return parse_property_string(drive_format(key), value, key)
    except FormatError as exc:
        raise param_error({key: f"invalid format - {exc}"}) from None


def print_drive(key: str, drive: dict[str, Any]) -> str:
    return print_property_string(drive, drive_format(key))


def with_mac(key: str, value: str, mac: str) -> str:
    """A netN value with a MAC address (QemuServer::Network::add_random_macs on create)."""
    fmt = drive_format(key)
    net = parse_property_string(fmt, value, key)
    net.setdefault("macaddr", mac)
    return print_property_string(net, fmt)


def drive_is_cloudinit(drive: dict[str, Any]) -> bool:
    """Drive.pm drive_is_cloudinit: the volume is named (vm-<vmid>-)cloudinit[.<format>]."""
    return bool(CLOUDINIT_VOLUME_RE.search(str(drive.get("file") or "")))


def drive_is_cdrom(drive: dict[str, Any], exclude_cloudinit: bool = False) -> bool:
    """Drive.pm drive_is_cdrom; a cloud-init drive is a CD-ROM too, unless excluded."""
    if exclude_cloudinit and drive_is_cloudinit(drive):
        return False
    return drive.get("media") == "cdrom"


@dataclass
class VmConfig:
    """One VM's configuration: values as text, like the file holds them; ``snapshots``: the
    file's ``[name]`` sections (each the config as it was then, plus snaptime etc.)."""

    values: dict[str, str]
    snapshots: dict[str, dict[str, str]] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    @property
    def is_template(self) -> bool:
        return self.values.get("template") == "1"

    @property
    def lock(self) -> str | None:
        return self.values.get("lock")

    def drives(self) -> list[tuple[str, dict[str, Any]]]:
        """(key, parsed drive) for every drive, in PVE's drive-name order."""
        out = []
        for key in DRIVE_NAMES:
            if key in self.values:
                out.append((key, parse_drive(key, self.values[key])))
        return out

    def unused(self) -> list[tuple[str, str]]:
        keys = sorted((k for k in self.values if re.fullmatch(r"unused\d+", k)), key=lambda k: int(k[6:]))
        return [(k, self.values[k].split(",")[0]) for k in keys]

    def render(self) -> str:
        raw = _render_section(self.values)
        for name, snap in self.snapshots.items():
            raw += f"\n[{name}]\n" + _render_section(snap)
        return raw

    @property
    def digest(self) -> str:
        return hashlib.sha1(self.render().encode()).hexdigest()

    @classmethod
    def parse(cls, raw: str) -> VmConfig:
        """parse_vm_config: the main section, then ``[snapname]`` sections (the pending and
        special sections are not modelled: their lines are skipped)."""
        sections: dict[str, dict[str, str]] = {"": {}}
        descr: dict[str, str] = {}
        current: str | None = ""
        for line in raw.split("\n"):
            if not line.strip():
                continue
            header = re.fullmatch(r"\[([a-zA-Z0-9_:\-]+)\]\s*", line)
            if header:
                name = header.group(1)
                current = None if name == "PENDING" or name.startswith("special:") else name
                if current is not None:
                    sections[current] = {}
                continue
            if current is None:
                continue
            if line.startswith("#"):
                descr[current] = descr.get(current, "") + decode_text(line[1:]) + "\n"
                continue
            m = re.match(r"^([a-z][a-z_\-]*\d*):\s*(.*\S)\s*$", line)
            if m:
                sections[current][m.group(1)] = m.group(2)
        for name, text in descr.items():
            sections[name]["description"] = text.rstrip()
        values = sections.pop("")
        return cls(values, sections)

    def api_view(self) -> dict[str, Any]:
        """GET .../config: typed like PVE's parse_vm_config (booleans and integers are
        numbers, everything else strings) plus the digest."""
        cs = config_schema()
        out: dict[str, Any] = {}
        for key, value in self.values.items():
            prop = cs.prop(key)
            typ = prop.get("type") if prop else None
            if typ == "boolean":
                out[key] = 1 if parse_boolean(value) else 0
            elif typ == "integer" and re.fullmatch(r"\d+", value):
                out[key] = int(value)
            else:
                out[key] = value
        out["digest"] = self.digest
        return out


def _render_section(values: dict[str, str]) -> str:
    """One section of a config file: the description as '#' lines, then sorted keys."""
    raw = ""
    descr = values.get("description")
    if descr:
        for line in descr.split("\n"):
            raw += "#" + encode_text(line) + "\n"
    for key in sorted(values):
        if key in ("digest", "description"):
            continue
        raw += f"{key}: {values[key]}\n"
    return raw


def normalize_value(key: str, value: str) -> str:
    """write_vm_config's check_type: booleans stored as 1/0, integers as plain numbers."""
    prop = config_schema().prop(key)
    if prop and prop.get("type") == "boolean":
        b = parse_boolean(value)
        return str(b) if b is not None else value
    if prop and prop.get("type") == "integer" and re.fullmatch(r"\d+", value):
        return str(int(value))
    return value
