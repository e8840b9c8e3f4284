"""Per-node agent credentials, recomputed from the coordinator's key (nothing per node stored).

A node's credential is ``pvsa.<node>.<generation>.<mac>`` with
``mac = HMAC-SHA256(key, "node:<node>:<generation>")``. The agent presents it to the
coordinator and accepts orders only with it; the coordinator recomputes it to check what
an agent presents and to call that node's agent. Re-enrolling a node bumps its generation
(agent_identity.generation), which makes every earlier credential of the node worthless.

The key is 32 random bytes in a 0600 file in data_dir, made on first start; coordinator
replicas must share it (as they share the ticket-signing key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from shared.messages import link
from shared.private_files import create_private_once

PREFIX = "pvsa"
# A PVE node name is a host name label: no dots, so the credential splits unambiguously.
NODE_NAME = re.compile(link.NODE_NAME)
GENERATION = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class NodeClaim:
    """Whose credential this says it is (checked against the MAC, not yet against the database)."""

    node_name: str
    generation: int


def _mac(key: bytes, node_name: str, generation: int) -> str:
    digest = hmac.new(key, f"node:{node_name}:{generation}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Credentials:
    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the agent credential key must have at least 32 bytes")
        self._key = key

    @classmethod
    def from_file(cls, path: Path) -> Credentials:
        """The key in ``path``, made there first if it is not."""
        text = create_private_once(path, (secrets.token_hex(32) + "\n").encode())
        return cls(bytes.fromhex(text.decode().strip()))

    def for_node(self, node_name: str, generation: int) -> str:
        return f"{PREFIX}.{node_name}.{generation}.{_mac(self._key, node_name, generation)}"

    def check(self, credential: str) -> NodeClaim | None:
        """The node and generation ``credential`` was made for, if this key made it."""
        parts = credential.split(".")
        if len(parts) != 4 or parts[0] != PREFIX:
            return None
        _, node_name, generation, mac = parts
        if not NODE_NAME.fullmatch(node_name) or not GENERATION.fullmatch(generation):
            return None
        if not hmac.compare_digest(mac.encode(), _mac(self._key, node_name, int(generation)).encode()):
            return None
        return NodeClaim(node_name, int(generation))
