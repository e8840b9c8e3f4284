"""What several commands share: the paging options and how a list page is shown."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from client import text
from client.output import Output

if TYPE_CHECKING:  # aiohttp is imported when a command runs, not for --help
    from client.api import Api

PAGE_SIZE = 100


class Commands:
    """Where a module declares its commands: each one takes the connection options too
    (``common``) and names the coroutine that runs it."""

    def __init__(self, sub: Any, common: argparse.ArgumentParser) -> None:
        self._sub = sub
        self._common = common

    def command(self, name: str, what: str, run: Any) -> argparse.ArgumentParser:
        """``what``: a line in the list of commands; ``run``'s docstring, if it has one, is
        the command's own --help."""
        about = inspect.cleandoc(run.__doc__) if run.__doc__ else what
        p: argparse.ArgumentParser = self._sub.add_parser(
            name, parents=[self._common], help=what, description=about
        )
        p.set_defaults(run=run)
        return p

    def group(self, name: str, what: str) -> Commands:
        """A command with actions (``pvesphere tasks list``)."""
        p = self._sub.add_parser(name, parents=[self._common], help=what, description=what)
        return Commands(p.add_subparsers(dest="action", required=True, metavar="ACTION"), self._common)


def paging(p: argparse.ArgumentParser) -> None:
    p.add_argument("--page", type=int, default=1, help="page number (default 1)")
    p.add_argument(
        "--page-size", type=int, default=PAGE_SIZE, help=f"rows per page, 1..100 (default {PAGE_SIZE})"
    )


async def show_page(
    api: Api, out: Output, path: str, args: argparse.Namespace, columns: Sequence[text.Column], **params: Any
) -> None:
    """One page of a list: a table (and how to see more), or the API's data with --json."""
    data = await api.get(path, page=args.page, page_size=args.page_size, **params)

    def lines(d: Any) -> list[str]:
        if not d["list"]:
            return ["(none)"]
        shown = text.table(d["list"], columns)
        first = (d["page"] - 1) * d["page_size"]
        if first + len(d["list"]) < d["total"]:
            shown.append(
                f"({len(d['list'])} of {d['total']}, rows {first + 1}..{first + len(d['list'])}; "
                f"--page {d['page'] + 1} for more)"
            )
        return shown

    out.result(data, lines)


def node(ref: dict[str, Any] | None) -> str:
    return "-" if not ref else str(ref.get("node_name"))
