"""The unit files: the agent's sandbox must not get in the way of imports; the coordinator's is tight.

An agent imports through pvesh/qm/qemu-img as root onto any storage: a dir storage may live
in /home, /srv, /mnt or /tmp, /etc/pve is written, volumes are block devices, and storage
activation mounts file systems. None of that may be hidden, frozen or kept private.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[1] / "systemd"
AGENT = UNITS / "pvesphere-agent.service"
COORDINATOR = UNITS / "pvesphere-coordinator.service"

# Each gives the service a mount namespace of its own (or a device allow-list): paths PVE
# writes hidden or read-only, and file systems mounted by an import invisible to the host.
NOT_FOR_THE_AGENT = {
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateMounts",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectHostname",
    "ProtectProc",
    "ProtectClock",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "TemporaryFileSystem",
    "BindPaths",
    "BindReadOnlyPaths",
    "DeviceAllow",
    "DevicePolicy",
    "CapabilityBoundingSet",
    "SystemCallFilter",
}
HARDENING = re.compile(
    r"(NoNewPrivileges|Protect\w+|Private\w+|Restrict\w+|LockPersonality|SystemCall\w+|UMask"
    r"|CapabilityBoundingSet|AmbientCapabilities|MemoryDenyWriteExecute|\w+Paths|Device\w+)"
)


def directives(unit: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) of every setting, in order (keys may repeat)."""
    found, section = [], ""
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


def service(unit: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for section, key, value in directives(unit):
        if section == "Service":
            settings.setdefault(key, []).append(value)
    return settings


def test_the_agent_sees_the_whole_node_as_pve_does() -> None:
    agent = service(AGENT)
    assert agent["User"] == ["root"]
    assert sorted(NOT_FOR_THE_AGENT & agent.keys()) == []


def test_the_agent_keeps_the_hardening_that_costs_pve_nothing() -> None:
    agent = service(AGENT)
    assert agent["NoNewPrivileges"] == ["yes"]
    families = set(agent["RestrictAddressFamilies"][0].split())
    assert families == {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"}
    for key in ("RestrictRealtime", "RestrictSUIDSGID", "LockPersonality"):
        assert agent[key] == ["yes"], key
    # Staging stays private by its directory; volumes PVE creates get PVE's own modes (umask 022).
    assert (agent["StateDirectoryMode"], agent["UMask"]) == (["0700"], ["0022"])


def test_the_coordinator_is_confined_to_its_data_dir() -> None:
    coordinator = service(COORDINATOR)
    assert coordinator["User"] == ["pvesphere"]
    assert coordinator["ProtectSystem"] == ["strict"]
    assert coordinator["StateDirectory"] == ["pvesphere"]
    # data_dir holds the database with the PVE token secrets: the coordinator's alone.
    assert (coordinator["StateDirectoryMode"], coordinator["UMask"]) == (["0700"], ["0077"])
    assert coordinator["CapabilityBoundingSet"] == [""]
    assert "ReadWritePaths" not in coordinator


@pytest.mark.parametrize("unit", [AGENT, COORDINATOR], ids=lambda p: p.name)
def test_every_hardening_directive_says_why(unit: Path) -> None:
    """A comment above each one, or above the group of such directives it belongs to."""
    unsaid, previous = [], ""
    for line in unit.read_text().splitlines():
        key = line.partition("=")[0].strip()
        if "=" in line and not line.startswith("#") and HARDENING.fullmatch(key):
            if not (previous.startswith("#") or HARDENING.fullmatch(previous.partition("=")[0])):
                unsaid.append(line)
        previous = line.strip()
    assert unsaid == []


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", [AGENT, COORDINATOR], ids=lambda p: p.name)
def test_systemd_accepts_the_unit(unit: Path, tmp_path: Path) -> None:
    # The programs are not installed here and PVE's units do not exist: stand-ins for both.
    text = re.sub(r"/opt/pvesphere/venv/bin/\S+", "/bin/true", unit.read_text())
    (tmp_path / unit.name).write_text(text)
    for needed in ("pve-cluster.service", "pvedaemon.service"):
        (tmp_path / needed).write_text("[Service]\nExecStart=/bin/true\n")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / unit.name)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"},
    )
    assert (result.returncode, result.stderr) == (0, "")
