"""Exporting a VM's disk into staging, where it becomes an upload's staged image.

``qemu-img convert -f <fmt> [-l snapshot.name=<snap>] -O qcow2 <disk> <staging part>``: the
source is opened read-only (qemu-img's default for a convert source), nothing is asked of PVE
but reads (agent/export_source.py), and no lock is taken on the VM: the source VM is never
changed. A stopped VM's disk is read as it is, and a QEMU that tries to start on it meanwhile
cannot take its write lock while qemu-img holds the image; the VM is looked at again after
the copy, and a VM found running then fails the export. A snapshot is read from inside the
qcow2 file (with ``-U``, sharing the image with the QEMU of a running VM).

The copy is written as ``upload-<id>-<random>.qcow2.part`` (staging.py: the name an upload
gets, so everything that cleans up after uploads cleans up after exports), hashed once
written, validated like an upload (validate.py), and only then renamed to its staged name.
Room for it is made in staging first (the staging budget, eviction.py). An export has a
deadline scaled by the disk's size (the import's settings: the same kind of qemu-img work)
and can be canceled; either kills qemu-img and removes the part file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from agent.eviction import Evictor
from agent.export_source import Source, locate, not_stopped
from agent.pve import NodePve, PveCallError
from agent.staging import Staging
from agent.upload_ops import UploadOpFailed, UploadOps
from agent.upload_writer import sha256_of
from agent.validate import ImageInfo, inspect
from shared.deadlines import Deadline, scaled_timeout
from shared.error_slugs import ErrorSlug
from shared.messages.exports import ExportRequest, ExportState, ExportView, describe
from shared.messages.uploads import Staged

log = logging.getLogger(__name__)
OUTPUT_FORMAT = "qcow2"
# Leave this much free on the staging disk besides the copy (as an upload does).
SPACE_RESERVE = 256 << 20
PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
KILL_WAIT = 10.0


class ExportFailed(UploadOpFailed):
    pass


@dataclass
class ExportOp:
    req: ExportRequest
    source: Source
    deadline: Deadline
    state: ExportState = "running"
    phase: str = "starting"
    progress: float = 0.0
    staged: Staged | None = None
    error: str | None = None
    slug: ErrorSlug | None = None
    status: int | None = None
    canceled: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def view(self) -> ExportView:
        return ExportView(
            upload_id=self.req.upload_id,
            state=self.state,
            phase=self.phase,
            progress=round(self.progress, 2),
            source=self.source.view,
            staged=self.staged,
            error=self.error,
            error_slug=self.slug,
            status=self.status,
        )


def convert_command(source: Source, part: Path) -> list[str]:
    """qemu-img's arguments: the format always given (never probed), the snapshot if any."""
    cmd = ["qemu-img", "convert", "-p", "-f", source.view.format]
    if source.view.snapshot is not None:
        cmd += ["-l", f"snapshot.name={source.view.snapshot}"]
        if source.view.running:
            cmd.append("-U")  # the running QEMU holds the image's write lock; the snapshot is still
    cmd += ["-O", OUTPUT_FORMAT, source.path, str(part)]
    return cmd


class Exporter(UploadOps[ExportOp]):
    def __init__(
        self, pve: NodePve, staging: Staging, evictor: Evictor, timeout: float, seconds_per_gib: float
    ) -> None:
        self.pve = pve
        self.staging = staging
        self.evictor = evictor
        self.timeout = timeout
        self.seconds_per_gib = seconds_per_gib
        super().__init__("export", KILL_WAIT * 2)

    async def start(self, req: ExportRequest) -> ExportOp:
        """The export for ``req.upload_id`` (a running or finished one is answered as it is);
        ExportRefused when the VM, disk or snapshot will not do."""
        op = self.ops.get(req.upload_id)
        if op is not None and op.state != "failed":
            return op
        source = await locate(self.pve, req)
        size = max(source.view.size, source.used)
        op = ExportOp(req, source, Deadline(scaled_timeout(self.timeout, self.seconds_per_gib, size)))
        self.ops[req.upload_id] = op
        op.task = asyncio.create_task(self._run(op), name=f"export-{req.upload_id}")
        return op

    async def _run(self, op: ExportOp) -> None:
        upload_id = op.req.upload_id
        name = self.staging.new_name("upload", upload_id, OUTPUT_FORMAT)
        part = self.staging.part_path(name)
        made = await self.settle(op, part, self._make(op, name, part), ErrorSlug.EXPORT_FAILED)
        if made is None:
            return
        sha256, info = made
        size = self.staging.path(name).stat().st_size
        op.staged = Staged(
            staged_name=name, size=size, sha256=sha256, format=OUTPUT_FORMAT, virtual_size=info.virtual_size
        )
        op.state, op.phase, op.progress = "done", "done", 100.0
        self.ended("done")
        src = op.source.view
        log.info(
            "export for upload %s: %s%s staged as %s: %d bytes, virtual size %d, sha256 %s",
            upload_id,
            describe(src),
            f" at snapshot {src.snapshot}" if src.snapshot else "",
            name,
            size,
            info.virtual_size,
            sha256,
        )

    async def _make(self, op: ExportOp, name: str, part: Path) -> tuple[str, ImageInfo]:
        """The disk copied to ``part``, hashed, validated and staged as ``name``: (sha256, facts)."""
        await self._make_room(op)
        if op.source.untrusted:
            op.phase = "checking the volume"
            src = op.source
            workdir = self.staging.root / ".qemu-img-cwd"
            await inspect(Path(src.path), src.view.format, op.req.max_virtual_size, src.view.volume, workdir)
        await self._copy(op, part)
        await self._check_still_stopped(op)
        op.phase = "hashing"
        sha256 = await asyncio.to_thread(sha256_of, part)
        op.phase = "validating"
        info = await inspect(part, OUTPUT_FORMAT, op.req.max_virtual_size, op.req.label)
        os.rename(part, self.staging.path(name))
        self.staging.fsync_dir()
        return sha256, info

    async def _make_room(self, op: ExportOp) -> None:
        """Room in staging for the copy (at most what the volume takes), or 507."""
        op.phase = "making room in staging"
        need = op.source.used
        purpose = f"room for {need} bytes of the export for upload {op.req.upload_id}"
        with contextlib.suppress(OSError):
            await self.evictor.make_room(need, SPACE_RESERVE, purpose)
        free = self.staging.free_bytes()
        if need + SPACE_RESERVE > free:
            raise ExportFailed(
                507,
                ErrorSlug.NO_SPACE,
                f"staging disk of {self.pve.node} has {free} bytes free, the disk may need {need}",
            )

    async def _copy(self, op: ExportOp, part: Path) -> None:
        op.phase = "copying the disk"
        cmd = convert_command(op.source, part)
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.staging.root,
        )
        assert proc.stdout is not None and proc.stderr is not None
        errors = asyncio.create_task(proc.stderr.read())
        try:
            async with asyncio.timeout(op.deadline.remaining()):
                while chunk := await proc.stdout.read(4096):
                    found = PROGRESS.findall(chunk)
                    if found:
                        op.progress = min(float(found[-1]) * 0.95, 95.0)
                code = await proc.wait()
        except TimeoutError:
            raise ExportFailed(
                504, ErrorSlug.EXPORT_FAILED, f"copying the disk {op.deadline.missed()}"
            ) from None
        finally:
            if proc.returncode is None:
                proc.kill()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), KILL_WAIT)
                errors.cancel()
        err = (await errors).decode(errors="replace").strip()
        if code != 0:
            said = err.replace(str(part), "the copy").replace(str(self.staging.root), "staging")
            said = said.splitlines()[-1].removeprefix("qemu-img: ") if said else f"exit {code}"
            src = op.source.view
            at = f" at snapshot {src.snapshot!r}" if src.snapshot else ""
            message = f"qemu-img could not read {src.volume}{at}: {said}"
            raise ExportFailed(502, ErrorSlug.EXPORT_FAILED, message)

    async def _check_still_stopped(self, op: ExportOp) -> None:
        """A disk read without a snapshot is only a consistent copy if the VM stayed stopped
        (wherever it is: a shared disk's VM may be on another node; an import volume belongs
        to no VM)."""
        vmid = op.source.view.vmid
        if op.source.view.snapshot is not None or vmid is None:
            return
        op.phase = "checking the VM stayed stopped"
        try:
            running = await not_stopped(self.pve, vmid) is not None
        except PveCallError as exc:
            raise ExportFailed(502, ErrorSlug.PVE_ERROR, f"PVE on {self.pve.node}: {exc}") from None
        if running:
            raise ExportFailed(
                409,
                ErrorSlug.VM_RUNNING,
                f"VM {vmid} was started during the export: its copy is not consistent",
            )
