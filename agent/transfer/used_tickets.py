"""Ticket ids this agent has spent, kept on disk until the tickets expire: a ticket used
before the agent restarted is still refused after it."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import msgspec

from shared.private_files import replace_private

log = logging.getLogger(__name__)


class UsedTickets:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._expires: dict[str, float] = {}
        try:
            self._expires = msgspec.json.decode(path.read_bytes(), type=dict[str, float])
        except FileNotFoundError:
            pass
        except msgspec.DecodeError as exc:  # written atomically: only a hand edit gets here
            log.warning("ignoring unreadable used-ticket list %s: %s", path, exc)

    def __contains__(self, jti: str) -> bool:
        return jti in self._expires

    def add(self, jti: str, expires_at: float) -> None:
        """Remember ``jti`` until ``expires_at`` (saved before this returns); forget expired ones."""
        now = time.time()
        self._expires = {j: exp for j, exp in self._expires.items() if exp >= now}
        self._expires[jti] = expires_at
        replace_private(self.path, msgspec.json.encode(self._expires))
