"""SSH public keys as PVE checks them when a VM is created with sshkeys.

PVE::Tools::validate_ssh_public_keys runs `ssh-keygen -l` on every non-blank line of the
(URL-decoded) value and dies "SSH public key validation error" if one fails; cryptography
parses the same OpenSSH public key lines without a process per key.
"""

from __future__ import annotations

from urllib.parse import unquote

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_ssh_public_identity


def invalid_lines(text: str) -> list[int]:
    """Numbers (from 1) of the non-blank lines that are not an OpenSSH public key."""
    bad = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            load_ssh_public_identity(line.strip().encode())
        except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError):
            bad.append(number)
    return bad


def check_urlencoded(value: str) -> None:
    """The sshkeys option (URL-encoded lines): ValueError naming the first bad line."""
    bad = invalid_lines(unquote(value))
    if bad:
        raise ValueError(f"line {bad[0]} is not an SSH public key (one key per line, OpenSSH format)")
