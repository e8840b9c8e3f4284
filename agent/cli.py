"""`pvesphere-agent`: run the agent on a PVE node, or check its setup."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from shared.config import ConfigError
from shared.log import setup_logging
from shared.version import VERSION

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.identity import StoredCredential


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pvesphere-agent",
        description="pvesphere-templates agent for one Proxmox VE node: imports templates "
        "locally and streams images to other nodes' agents.",
        epilog="Settings come from the TOML file (--config, $PVESPHERE_AGENT_CONFIG or "
        "/etc/pvesphere/agent.toml) and PVESPHERE_AGENT_<SETTING> environment variables.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    p.add_argument("--config", type=Path, help="TOML config file")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the agent (foreground; SIGTERM stops it)")
    serve.add_argument("--node", help="PVE node name (setting: node; default: short host name)")
    serve.add_argument("--host", help="listen address (setting: host)")
    serve.add_argument("--port", type=int, help="listen port (setting: port)")
    serve.add_argument("--coordinator-url", help="setting: coordinator_url")
    sub.add_parser(
        "check",
        help="check the config, PVE access, the coordinator and whether this agent is enrolled "
        "and its credential accepted, then exit",
    )
    return p


def _serve(args: argparse.Namespace) -> int:
    import uvloop
    from aiohttp import web

    from agent import config as config_mod
    from agent import identity, shutdown
    from agent.coordinator_link import coordinator_tls
    from agent.server import create_app
    from shared.tls import client_context, server_context

    cfg = config_mod.load(
        args.config,
        node=args.node,
        host=args.host,
        port=args.port,
        coordinator_url=args.coordinator_url,
    )
    setup_logging(cfg.log_level, f"agent[{cfg.node_name}]", cfg.log_format)
    # Every certificate and CA file is read now: a wrong one is a configuration error at
    # once, not a failure at the first enrolment, heartbeat or sync.
    served = server_context(cfg.tls_cert_file, cfg.tls_key_file)
    peer_tls = client_context(cfg.tls_ca_file, "tls_ca_file")
    coordinator_tls(cfg.coordinator_ca_file)
    credential = asyncio.run(identity.credential(cfg))  # enrols first if it never did
    try:
        web.run_app(
            create_app(cfg, credential, peer_tls),
            host=cfg.host,
            port=cfg.port,
            ssl_context=served,
            print=None,
            access_log=None,
            shutdown_timeout=shutdown.REQUEST_GRACE,
            loop=uvloop.new_event_loop(),
        )
    except OSError as exc:
        print(
            f"pvesphere-agent: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    return 0


def _check_tls(cfg: AgentConfig) -> bool:
    """Would a peer that trusts tls_ca_file accept this agent's certificate at its URL?"""
    from urllib.parse import urlsplit

    from shared.tls import client_context, refusal, server_context

    host = urlsplit(cfg.url).hostname or ""
    try:
        problem = refusal(
            server_context(cfg.tls_cert_file, cfg.tls_key_file),
            client_context(cfg.tls_ca_file, "tls_ca_file"),
            host,
        )
    except ConfigError as exc:
        print(f"TLS: FAILED: {exc}")
        return False
    if problem is not None:
        print(
            f"TLS: FAILED: peers checking {cfg.tls_cert_file} against tls_ca_file {cfg.tls_ca_file} "
            f"refuse it as {host}: {problem}"
        )
        return False
    print(f"TLS: {cfg.tls_cert_file} is valid for {cfg.url} (issued by tls_ca_file {cfg.tls_ca_file})")
    return True


async def _check(args: argparse.Namespace) -> int:
    from agent import config as config_mod

    cfg = config_mod.load(args.config)
    ok = _check_tls(cfg)
    ok = await _check_pve(cfg) and ok
    ok = _check_staging(cfg) and ok
    enrolled, enrolment_ok = _check_enrolment(cfg)
    ok = enrolment_ok and ok
    ok = await _check_coordinator(cfg, enrolled) and ok
    return 0 if ok else 1


async def _check_pve(cfg: AgentConfig) -> bool:
    from agent.pve import NodePve

    status = await NodePve(cfg).status()
    if status.ok:
        print(f"PVE: ok, version {status.version}, cluster {status.cluster_name}, node {cfg.node_name}")
        return True
    print(f"PVE: FAILED: {status.error}")
    return False


def _check_staging(cfg: AgentConfig) -> bool:
    try:
        cfg.staging_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"staging dir: {cfg.staging_dir} FAILED: {exc.strerror}")
        return False
    print(f"staging dir: {cfg.staging_dir} ok")
    return True


def _check_enrolment(cfg: AgentConfig) -> tuple[StoredCredential | None, bool]:
    """(the stored credential if any, whether the enrolment is fine: enrolled or able to enrol)."""
    from agent import identity

    try:
        enrolled = identity.stored(cfg)
    except ConfigError as exc:
        print(f"enrolment: FAILED: {exc}")
        return None, False
    if enrolled is not None:
        print(f"enrolment: enrolled as node {enrolled.node} ({cfg.credential_file})")
    elif cfg.join_token or cfg.join_token_file:
        print(f"enrolment: not enrolled yet; the next start enrols with the join token as {cfg.node_name}")
    else:
        print(
            f"enrolment: NOT ENROLLED and no join_token: run `pvesphere-coordinator agent enroll "
            f"{cfg.node_name}` and set join_token or join_token_file"
        )
        return enrolled, False
    return enrolled, True


async def _check_coordinator(cfg: AgentConfig, enrolled: StoredCredential | None) -> bool:
    """Whether the coordinator answers: its health check, or (once enrolled) our credential."""
    import aiohttp

    from agent.coordinator_link import (
        agent_api,
        call_coordinator,
        coordinator_session,
        error_message,
        link_failure,
    )

    try:
        async with coordinator_session(cfg, 5) as session:
            if enrolled is None:
                async with session.get(cfg.coordinator_url.rstrip("/") + "/healthz") as r:
                    print(f"coordinator {cfg.coordinator_url}: HTTP {r.status}")
                    return r.status == 200
            code, payload = await call_coordinator(
                session, "GET", agent_api(cfg) + "/whoami", enrolled.credential
            )
            if code == 200:
                print(f"coordinator {cfg.coordinator_url}: credential accepted")
                return True
            print(
                f"coordinator {cfg.coordinator_url}: credential REFUSED "
                f"(HTTP {code}: {error_message(payload)})"
            )
            return False
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(f"coordinator {cfg.coordinator_url}: FAILED: {link_failure(exc)}")
        return False


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        return asyncio.run(_check(args))
    except ConfigError as exc:
        print(f"pvesphere-agent: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
