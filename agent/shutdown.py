"""A graceful stop (SIGTERM): say what was in flight and what is left to resume, end
imports and clones cleanly, and be gone well within systemd's TimeoutStopSec (30 s in our unit).

Deadline: imports get IMPORT_STOP_WAIT to stop their PVE task and remove their unfinished
VM, in-flight requests REQUEST_GRACE, the goodbye to the coordinator 3 s: STOP_DEADLINE in
all. Measured in tests/sync/test_sigterm.py: 0.1 s sending a copy, 4 s receiving one (its
stream runs on through the grace), 1.5 s importing (the emulator's PVE stops its task at
once; a PVE that does not is waited for IMPORT_STOP_WAIT, then systemd's deadline rules).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from agent.appkeys import CLONER, DOWNLOADER, EXPORTER, IMPORTER, RECEIVES, SENDER
from shared.messages.exports import describe

log = logging.getLogger(__name__)

IMPORT_STOP_WAIT = 20.0
# A peer's stream or an upload in progress gets this long to end by itself; then it is cut
# (a copy resumes from its verified bytes after the restart, an upload is retried whole).
REQUEST_GRACE = 2.0
STOP_DEADLINE = IMPORT_STOP_WAIT + REQUEST_GRACE + 3.0


def in_flight(app: web.Application) -> list[str]:
    """One line per piece of work this agent is doing, with what becomes of it."""
    lines = [
        f"import {op.req.key} of VM {op.req.vmid} ({op.phase}, {op.progress:.0f} %): left to resume: "
        "its PVE task is stopped and its unfinished VM removed; the coordinator asks again after the restart"
        for op in app[IMPORTER].running()
    ]
    lines += [
        f"export of {describe(op.source.view)} for upload {op.req.upload_id} ({op.phase}): stopped, "
        "its partial copy removed; the coordinator gives the template from it up"
        for op in app[EXPORTER].ops.values()
        if op.state == "running"
    ]
    lines += [
        f"download for upload {op.req.upload_id} ({op.received} of {op.expected or '?'} bytes): stopped, "
        "its partial file removed; the coordinator gives the template from that URL up"
        for op in app[DOWNLOADER].ops.values()
        if op.state == "running"
    ]
    lines += [
        f"clone {op.req.key} of VM {op.req.source_vmid} to {op.req.vmid} ({op.phase}, {op.progress:.0f} %): "
        "left to resume: its PVE task is stopped and its unfinished VM removed; the coordinator asks again"
        for op in app[CLONER].running()
    ]
    lines += [
        f"receive of sync task {r.rec.task_id} ({r.rec.verified} of {r.rec.size} bytes verified): left "
        "to resume: kept in staging, the sender goes on from the verified bytes after the restart"
        for r in app[RECEIVES].receives.values()
        if r.rec.state == "receiving" and r.session is not None
    ]
    lines += [
        f"sending transfer {transfer_id}: left to resume: the coordinator starts it again; "
        "each target keeps what it verified"
        for transfer_id, task in app[SENDER].transfers.items()
        if not task.done()
    ]
    return lines


async def on_shutdown(app: web.Application) -> None:
    work = in_flight(app)
    log.info(
        "stopping (within %.0f s): %s",
        STOP_DEADLINE,
        f"{len(work)} piece(s) of work in flight" if work else "no work in flight",
    )
    for line in work:
        log.info("stopping: %s", line)
    await app[EXPORTER].stop(REQUEST_GRACE)  # (its part file goes: the coordinator gives the export up)
    await app[DOWNLOADER].stop(REQUEST_GRACE)  # (the same for a download)
    await asyncio.gather(app[IMPORTER].stop(IMPORT_STOP_WAIT), app[CLONER].stop(IMPORT_STOP_WAIT))
