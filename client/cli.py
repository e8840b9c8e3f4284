"""`pvesphere`: the command line, and how each way of failing becomes an exit code
(exit_codes.py) and one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from client.answers import ApiFailure, Unreachable
from client.commands import clone, inventory, tasks, templates, upload
from client.commands.common import Commands
from client.exit_codes import DOC, Exit, UsageError
from client.output import Output
from client.settings import CONFIG_ENV, ENV, resolve
from shared.version import VERSION

PROG = "pvesphere"
ABOUT = """\
Manage pvesphere templates from the command line: upload images, follow imports
and syncs, clone, look things up. `pvesphere COMMAND --help` tells more.

Where the coordinator and the token come from, first match wins: the flags
--url/--token/--cacert, then $PVESPHERE_URL/$PVESPHERE_TOKEN/$PVESPHERE_CACERT,
then the config file (url = "...", token = "...", cacert = "...")."""


def _common() -> argparse.ArgumentParser:
    """The connection options, taken before or after the command (``pvesphere nodes --json``).
    SUPPRESS: a later parser's missing option does not undo an earlier one's value."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection and output")
    g.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"the coordinator, e.g. https://pvesphere:8443 (${ENV['url']})",
    )
    g.add_argument("--token", default=argparse.SUPPRESS, help=f"an API token (${ENV['token']})")
    g.add_argument(
        "--cacert",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"the CA file an https URL's certificate is checked against, e.g. the cluster's "
        f"pve-root-ca.pem (${ENV['cacert']})",
    )
    g.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"TOML file with url, token, cacert (${CONFIG_ENV}; default ~/.config/pvesphere/config.toml)",
    )
    g.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the API's data as JSON"
    )
    return p


def parser() -> argparse.ArgumentParser:
    common = _common()
    p = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        description=ABOUT,
        epilog=DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (upload, templates, tasks, clone, inventory):
        module.add(Commands(sub, common))
    return p


def commands(p: argparse.ArgumentParser | None = None) -> list[list[str]]:
    """Every command and action, e.g. ["tasks", "watch"] (for --help tests and docs)."""
    found: list[list[str]] = []

    def walk(parser_: argparse.ArgumentParser, prefix: list[str]) -> None:
        subs = [a for a in parser_._actions if isinstance(a, argparse._SubParsersAction)]
        for action in subs:
            for name, child in action.choices.items():
                found.append([*prefix, name])
                walk(child, [*prefix, name])

    walk(p or parser(), [])
    return found


async def _run(args: argparse.Namespace, out: Output) -> Exit:
    settings = resolve(
        {
            "url": getattr(args, "url", None),
            "token": getattr(args, "token", None),
            "cacert": _str(args, "cacert"),
        },
        os.environ,
        getattr(args, "config", None),
    )
    from client.api import Api  # aiohttp once a command runs: --help takes 0.09 s of CPU, not 0.22

    async with Api(settings) as api:
        return Exit(await args.run(api, args, out))


def _str(args: argparse.Namespace, name: str) -> str | None:
    value = getattr(args, name, None)
    return None if value is None else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = Output(as_json=getattr(args, "json", False))
    try:
        return int(asyncio.run(_run(args, out)))
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return Exit.USAGE
    except ApiFailure as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return Exit.API_ERROR
    except Unreachable as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return Exit.UNREACHABLE
    except BrokenPipeError:
        # stdout was closed early (`pvesphere storages | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return Exit.OK
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; work already started goes on at the coordinator", file=sys.stderr)
        return Exit.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
