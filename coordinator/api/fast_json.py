"""The success envelope encoded by msgspec, for the API's hot reads.

``errors.success`` goes through ``msgspec.to_builtins`` and ``json.dumps`` (datetimes
formatted by ``timefmt.json_default``): for a page of ten sync tasks that was about a
tenth of the request's CPU. Here the struct is encoded in one pass. msgspec writes an
aware UTC datetime as ``2025-12-24T10:00:00Z`` when it has no microseconds, the API's one
format, so the data must carry whole-second UTC datetimes, as coordinator/db/fast_reads.py
gives them (tests/unit/test_fast_json.py holds the two encodings to the same text).
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

_ENCODER = msgspec.json.Encoder()
_HEAD = b'{"code":200,"message":"success","data":'


def ok(data: Any) -> web.Response:
    """HTTP 200 with the contract's envelope around ``data`` (structs, whole-second UTC times)."""
    body = bytearray(_HEAD)
    _ENCODER.encode_into(data, body, len(body))
    body += b"}"
    return web.Response(body=bytes(body), content_type="application/json")
