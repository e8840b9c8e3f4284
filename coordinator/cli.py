"""`pvesphere-coordinator`: serve the API, migrate the database, manage API tokens."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from shared.config import ConfigError
from shared.log import setup_logging
from shared.version import VERSION

if TYPE_CHECKING:
    from coordinator.config import CoordinatorConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pvesphere-coordinator",
        description="Central coordinator of pvesphere-templates: REST API, database, jobs.",
        epilog="Settings come from the TOML file (--config, $PVESPHERE_CONFIG or "
        "/etc/pvesphere/coordinator.toml) and PVESPHERE_<SETTING> environment variables.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    p.add_argument("--config", type=Path, help="TOML config file")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the API server (foreground; SIGTERM stops it)")
    serve.add_argument("--host", help="listen address (setting: host)")
    serve.add_argument("--port", type=int, help="listen port (setting: port)")

    sub.add_parser(
        "migrate", help="create or upgrade the database schema (Alembic) and make the ticket-signing key"
    )

    token = sub.add_parser("token", help="create, list or revoke API tokens")
    tsub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = tsub.add_parser("create", help="create a token and print its secret once")
    create.add_argument("--name", required=True, help="a label, e.g. the person or tool using it")
    create.add_argument(
        "--role",
        required=True,
        choices=["viewer", "operator", "admin"],
        help="viewer: read; operator: upload/sync/delete templates; admin: also register clusters",
    )
    create.add_argument("--secret-file", type=Path, help="also write the secret to this file (0600)")
    tsub.add_parser("list", help="list tokens (never their secrets)")
    revoke = tsub.add_parser("revoke", help="revoke a token by name or id")
    revoke.add_argument("token", help="token name or id")
    return p


def _serve(config_path: Path | None, host: str | None, port: int | None) -> int:
    import uvloop
    from aiohttp import web

    from coordinator import config as config_mod
    from coordinator.app import SchemaOutdated, create_app

    cfg = config_mod.load(config_path, host=host, port=port)
    setup_logging(cfg.log_level, "coordinator")
    _secure(cfg)
    try:
        web.run_app(
            create_app(cfg),
            host=cfg.host,
            port=cfg.port,
            print=None,
            access_log=None,
            loop=uvloop.new_event_loop(),
        )
    except SchemaOutdated as exc:
        print(f"pvesphere-coordinator: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"pvesphere-coordinator: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    return 0


def _migrate(config_path: Path | None) -> int:
    from coordinator import config as config_mod
    from coordinator.db.migrate import head_revision, upgrade_to_head
    from coordinator.db.session import create_engine
    from shared.tickets import TicketSigner

    cfg = config_mod.load(config_path)
    setup_logging(cfg.log_level, "coordinator")
    _secure(cfg)
    url = cfg.resolved_database_url
    create_engine(url)  # creates the SQLite directory if needed
    upgrade_to_head(url)
    print(f"database schema is at {head_revision()}")
    # The ticket-signing key is made here too, so that `serve` never loads the crypto
    # library just to create it (about 9 MiB of resident memory for the whole run).
    key = cfg.resolved_ticket_key_file
    existed = key.exists()
    TicketSigner(key)
    print(f"ticket-signing key {key} {'is there' if existed else 'created'}")
    return 0


async def _token(args: argparse.Namespace) -> int:
    from coordinator import config as config_mod
    from coordinator import private_files, tokens
    from coordinator.db.session import create_engine, session_factory

    cfg = config_mod.load(args.config)
    _secure(cfg)
    engine = create_engine(cfg.resolved_database_url)
    try:
        async with session_factory(engine)() as session:
            if args.token_command == "create":
                issued = await tokens.create(session, args.name, args.role)
                if args.secret_file:
                    private_files.write_secret(args.secret_file, issued.secret)
                print(issued.secret)
                print(
                    f"token {issued.name!r} (id {issued.id}, role {issued.role}) created; "
                    "the secret is shown only now",
                    file=sys.stderr,
                )
            elif args.token_command == "list":
                rows = await tokens.list_all(session)
                print(f"{'ID':>4}  {'NAME':<24} {'ROLE':<9} {'CREATED':<20} {'LAST USED':<20} STATE")
                for r in rows:
                    print(
                        f"{r.id:>4}  {r.name:<24} {r.role:<9} {r.created_at:%Y-%m-%dT%H:%M:%SZ}  "
                        f"{(f'{r.last_used_at:%Y-%m-%dT%H:%M:%SZ}' if r.last_used_at else '-'):<20} "
                        f"{'revoked' if r.revoked_at else 'active'}"
                    )
            else:
                row = await tokens.revoke(session, args.token)
                print(f"token {row.name!r} (id {row.id}) is revoked")
    except tokens.TokenError as exc:
        print(f"pvesphere-coordinator: {exc}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    return 0


def _secure(cfg: CoordinatorConfig) -> None:
    """The data directory and the files holding secrets are the coordinator's alone."""
    from coordinator import private_files

    for what in private_files.secure(cfg):
        logging.getLogger("coordinator").warning("made private: %s", what)


def main(argv: list[str] | None = None) -> int:
    # Whatever the coordinator creates (database, keys, token files) is its own to read.
    os.umask(0o077)
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args.config, args.host, args.port)
        if args.command == "migrate":
            return _migrate(args.config)
        return asyncio.run(_token(args))
    except ConfigError as exc:
        print(f"pvesphere-coordinator: configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # database down, bad URL...: one clear line, not a traceback
        from sqlalchemy.exc import OperationalError, ProgrammingError

        if isinstance(exc, OperationalError | ProgrammingError):
            print(f"pvesphere-coordinator: database error: {exc.orig}", file=sys.stderr)
            if "no such table" in str(exc) or "doesn't exist" in str(exc):
                print("hint: run `pvesphere-coordinator migrate` first", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
