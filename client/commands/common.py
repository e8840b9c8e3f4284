"""What several commands share: the paging options and how a list page is shown."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from client import text
from client.api import Api
from client.output import Output

PAGE_SIZE = 100


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
