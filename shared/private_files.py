"""Small secret or state files readable only by their owner (0600), never seen half written."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def _write_temp(path: Path, data: bytes) -> Path:
    """``data`` in a new 0600 file beside ``path``, flushed to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return tmp


def replace_private(path: Path, data: bytes) -> None:
    """Write ``path`` atomically: a reader sees the old content or the new, nothing between."""
    tmp = _write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_private_once(path: Path, data: bytes) -> bytes:
    """``path``'s content, made from ``data`` if it does not exist yet. When two processes
    race (coordinator replicas on one data_dir) both get the content of the one that won."""
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes()
    tmp = _write_temp(path, data)
    try:
        os.link(tmp, path)  # fails if another process got there first
        return data
    except FileExistsError:
        return path.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)
