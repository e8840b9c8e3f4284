"""A transfer step refused, with the HTTP status and slug a peer or the coordinator sees."""

from __future__ import annotations


class TransferRefused(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
