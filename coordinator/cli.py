"""`pvesphere-coordinator`: serve the API, migrate the database, manage API tokens and agents."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from shared.config import ConfigError
from shared.log import setup_logging
from shared.version import VERSION

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

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
    serve.add_argument("--host", help="HTTPS listen address (setting: host)")
    serve.add_argument("--port", type=int, help="HTTPS listen port (setting: port)")

    sub.add_parser(
        "migrate",
        help="create or upgrade the database schema (Alembic) and make the ticket-signing and "
        "agent credential keys",
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

    agent = sub.add_parser("agent", help="enrol, list or revoke the agents of PVE nodes")
    asub = agent.add_subparsers(dest="agent_command", required=True, metavar="ACTION")
    enroll = asub.add_parser(
        "enroll",
        help="print a single-use join token for NODE's agent (its join_token setting); "
        "the agent trades it for its own credential on its next start",
    )
    enroll.add_argument("node", metavar="NODE", help="the PVE node name, as PVE names it")
    enroll.add_argument(
        "--ttl",
        type=_duration,
        default=timedelta(hours=1),
        help="how long the join token can be used: seconds, or e.g. 30m, 2h, 1d (default: 1h)",
    )
    asub.add_parser("list", help="list enrolled nodes (never their credentials)")
    arevoke = asub.add_parser(
        "revoke", help="refuse NODE's agent credential from now on (re-enrolling needs a new join token)"
    )
    arevoke.add_argument("node", metavar="NODE")
    return p


def _duration(text: str) -> timedelta:
    """``3600``, ``90s``, ``30m``, ``2h`` or ``1d``."""
    match = re.fullmatch(r"([0-9]+)([smhd]?)", text.strip())
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3600, 30m, 2h, 1d)")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return timedelta(seconds=int(match.group(1)) * unit)


def _serve(config_path: Path | None, host: str | None, port: int | None) -> int:
    import uvloop

    from coordinator import config as config_mod
    from coordinator.app import SchemaOutdated, create_app
    from coordinator.db.sqlite_lock import SqliteInUse, hold_sqlite
    from coordinator.listeners import ListenError, agent_tls, listeners, serve

    cfg = config_mod.load(config_path, host=host, port=port)
    setup_logging(cfg.log_level, "coordinator", cfg.log_format)
    on = listeners(cfg)
    checks_agents = agent_tls(cfg)
    _secure(cfg)
    try:
        sqlite_lock = hold_sqlite(cfg.resolved_database_url)
    except SqliteInUse as exc:
        print(f"pvesphere-coordinator: {exc}", file=sys.stderr)
        return 2
    try:
        uvloop.run(serve(create_app(cfg, checks_agents), on))
    except SchemaOutdated as exc:
        print(f"pvesphere-coordinator: {exc}", file=sys.stderr)
        return 2
    except ListenError as exc:
        print(f"pvesphere-coordinator: {exc}", file=sys.stderr)
        return 1
    finally:
        if sqlite_lock is not None:
            sqlite_lock.close()
    return 0


def _migrate(config_path: Path | None) -> int:
    from coordinator import config as config_mod
    from coordinator.agents.credentials import Credentials
    from coordinator.db.migrate import head_revision, upgrade_to_head
    from coordinator.db.session import create_engine
    from shared.tickets import TicketSigner

    cfg = config_mod.load(config_path)
    setup_logging(cfg.log_level, "coordinator", cfg.log_format)
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
    key = cfg.agent_key_file
    existed = key.exists()
    Credentials.from_file(key)
    print(f"agent credential key {key} {'is there' if existed else 'created'}")
    return 0


async def _in_database(
    config_path: Path | None, work: Callable[[AsyncSession], Awaitable[None]], refusal: type[Exception]
) -> int:
    """Run a command's ``work`` in one database session; a ``refusal`` is one line and exit 1."""
    from coordinator import config as config_mod
    from coordinator.db.session import create_engine, session_factory

    cfg = config_mod.load(config_path)
    _secure(cfg)
    engine = create_engine(cfg.resolved_database_url)
    try:
        async with session_factory(engine)() as session:
            await work(session)
    except refusal as exc:
        print(f"pvesphere-coordinator: {exc}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    return 0


def _secure(cfg: CoordinatorConfig) -> None:
    """The data directory and the files holding secrets are the coordinator's alone."""
    from coordinator import state_permissions

    for what in state_permissions.secure(cfg):
        logging.getLogger("coordinator").warning("made private: %s", what)


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%SZ}" if moment else "-"


async def _token(args: argparse.Namespace) -> int:
    from coordinator import tokens
    from shared.private_files import replace_private

    async def work(session: AsyncSession) -> None:
        if args.token_command == "create":
            issued = await tokens.create(session, args.name, args.role)
            if args.secret_file:
                replace_private(args.secret_file, (issued.secret + "\n").encode())
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
                state = "revoked" if r.revoked_at else "active"
                print(
                    f"{r.id:>4}  {r.name:<24} {r.role:<9} {_when(r.created_at)}  "
                    f"{_when(r.last_used_at):<20} {state}"
                )
        else:
            row = await tokens.revoke(session, args.token)
            print(f"token {row.name!r} (id {row.id}) is revoked")

    return await _in_database(args.config, work, tokens.TokenError)


async def _agent(args: argparse.Namespace) -> int:
    from coordinator.agents import enrolment
    from coordinator.db.types import utcnow

    async def work(session: AsyncSession) -> None:
        if args.agent_command == "enroll":
            join = await enrolment.issue_join_token(session, args.node, args.ttl)
            print(join.secret)
            print(
                f"join token for node {join.node_name}, usable once until "
                f"{_when(join.expires_at)}: set it as join_token (or join_token_file) "
                "in that node's agent.toml and start the agent",
                file=sys.stderr,
            )
        elif args.agent_command == "list":
            now = utcnow()
            print(f"{'NODE':<24} {'GENERATION':>10}  {'STATE':<9} {'ENROLLED':<20} JOIN TOKEN UNTIL")
            for r in await enrolment.list_all(session):
                state = enrolment.state(r, now)
                print(
                    f"{r.node_name:<24} {r.generation:>10}  {state:<9} {_when(r.enrolled_at):<20} "
                    f"{_when(r.join_expires_at)}"
                )
        else:
            row = await enrolment.revoke(session, args.node)
            print(f"the agent credential of node {row.node_name} is revoked")

    return await _in_database(args.config, work, enrolment.EnrolmentError)


def main(argv: list[str] | None = None) -> int:
    # Whatever the coordinator creates (database, keys, token files) is its own to read.
    os.umask(0o077)
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args.config, args.host, args.port)
        if args.command == "migrate":
            return _migrate(args.config)
        if args.command == "agent":
            return asyncio.run(_agent(args))
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
