"""A throw-away MariaDB database per test session, through asyncmy (as the product uses it)."""

from __future__ import annotations

import asyncio
import os
import secrets

import asyncmy

SERVER = os.environ.get("PVESPHERE_TEST_MYSQL", "root@127.0.0.1:3306")


def _parts(server: str) -> tuple[str, str, str, int]:
    creds, _, hostport = server.rpartition("@")
    user, _, password = creds.partition(":")
    host, _, port = hostport.partition(":")
    return user or "root", password, host, int(port or 3306)


async def _run(sql: str, server: str) -> None:
    user, password, host, port = _parts(server)
    conn = await asyncmy.connect(host=host, port=port, user=user, password=password, connect_timeout=3)
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql)
    finally:
        conn.close()


def unavailable_reason(server: str = SERVER) -> str | None:
    """None when MariaDB at ``server`` (user[:password]@host:port) answers, else why not."""
    try:
        asyncio.run(_run("SELECT 1", server))
    except Exception as exc:  # any connect failure means "not available here"
        return f"MariaDB at {server} is not reachable ({exc.__class__.__name__}: {exc})"
    return None


def create_database(server: str = SERVER) -> tuple[str, str]:
    """A fresh database; returns (name, SQLAlchemy URL)."""
    name = f"pvesphere_test_{secrets.token_hex(4)}"
    asyncio.run(_run(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci", server))
    user, password, host, port = _parts(server)
    auth = f"{user}:{password}" if password else user
    return name, f"mysql+asyncmy://{auth}@{host}:{port}/{name}?charset=utf8mb4"


def drop_database(name: str) -> None:
    asyncio.run(_run(f"DROP DATABASE IF EXISTS {name}", SERVER))
