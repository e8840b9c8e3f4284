"""Real disk work with qemu-img: info, create and convert with PVE's progress lines.

Mirrors pve-storage (Common.pm qemu_img_info, Plugin.pm file_size_info) and qemu-server
(QemuImage.pm convert): `qemu-img convert -p -n ...`, each `(x.xx/100%)` report becoming
"transferred A of B (x.xx%)".
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvesim.errors import die

QEMU_IMG = os.environ.get("PVESIM_QEMU_IMG", "/usr/bin/qemu-img")
# formats qemu-server recognises by file extension (Drive.pm $QEMU_FORMAT_RE)
QEMU_FORMAT_RE = r"raw|qcow|qed|qcow2|vmdk|cloop"
CHECKED_FORMATS = ("raw", "qcow", "qcow2", "qed", "vmdk", "cloop")
# at most this many progress lines per second reach the task log (the final one always does)
PROGRESS_LINES_PER_SEC = 4.0

LogFn = Callable[[str], None]


def render_bytes(value: float, precision: int = 2) -> str:
    """PVE::Format::render_bytes."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    unit = 0
    if value > 1023:
        unit = int(math.log(value) / math.log(1024))
        value /= 1024**unit
    return f"{value:.{precision}f} {units[unit]}"


async def run(cmd: list[str], log: LogFn | None = None, timeout: float | None = None) -> tuple[int, str, str]:
    """Run a command; stdout/stderr lines go to `log` as PVE's run_command prints them."""
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise
    text_out, text_err = out.decode(errors="replace"), err.decode(errors="replace")
    if log:
        for line in (text_out + text_err).splitlines():
            log(line)
    assert proc.returncode is not None
    return proc.returncode, text_out, text_err


def cmd_string(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


async def info(path: str, fmt: str | None = None, timeout: float | None = None) -> dict[str, Any]:
    """`qemu-img info --output=json PATH [-f FMT]` (argument order as pve-storage)."""
    cmd = [QEMU_IMG, "info", "--output=json", path]
    if fmt:
        cmd += ["-f", fmt]
    rc, out, err = await run(cmd, timeout=timeout)
    if rc != 0 or not out.strip():
        raise die(err.strip() or f"qemu-img info failed for '{path}'")
    return json.loads(out)


@dataclass
class SizeInfo:
    size: int
    format: str
    used: int
    parent: str | None
    ctime: int


async def file_size_info(
    path: str, fmt: str | None = None, untrusted: bool = False, timeout: float | None = None
) -> SizeInfo:
    """pve-storage Plugin.pm file_size_info (with the checks for untrusted images)."""
    try:
        st = os.stat(path)
    except OSError:
        extra = " - dangling symlink?" if os.path.islink(path) else ""
        raise die(f"failed to stat '{path}'{extra}") from None
    if fmt and fmt not in CHECKED_FORMATS:
        fmt = "raw"
    try:
        data = await info(path, fmt, timeout)
    except Exception:
        if untrusted:
            raise die("failed to query file information with qemu-img") from None
        raise
    if untrusted:
        specific = data.get("format-specific") or {}
        if specific.get("type") == "qcow2" and (specific.get("data") or {}).get("data-file"):
            raise die(f"{path}: 'data-file' references are not allowed!")
        if specific.get("type") == "vmdk":
            extents = (specific.get("data") or {}).get("extents") or []
            if len(data.get("children") or []) > 1 or len(extents) > 1:
                raise die(f"{path}: multiple children or extents are not allowed!")
        if data.get("backing-filename"):
            raise die(f"backing file not allowed for untrusted image '{path}'!")
    found = data.get("format", "")
    if fmt and fmt != found:
        raise die(f"qemu-img bug: queried format does not match format in result '{fmt} ne {found}'")
    return SizeInfo(
        size=int(data["virtual-size"]),
        format=found,
        used=int(data.get("actual-size") or 0),
        parent=data.get("backing-filename"),
        ctime=int(st.st_ctime),
    )


async def create(fmt: str, path: Path, size_kib: int, log: LogFn) -> None:
    """pve-storage Common.pm qemu_img_create; qemu-img's 'Formatting ...' line is logged like
    PVE's run_command prints it into the task log."""
    cmd = [QEMU_IMG, "create"]
    if fmt == "qcow2":
        cmd += ["-o", "preallocation=metadata"]
    cmd += ["-f", fmt, str(path), f"{size_kib}K"]
    rc, _out, err = await run(cmd, log=log)
    if rc != 0:
        raise die(f"command '{cmd_string(cmd)}' failed: exit code {rc}")


class Progress:
    """Turns qemu-img `-p` output into PVE's "transferred ..." lines, rate limited."""

    def __init__(self, size: int, log: LogFn) -> None:
        self.size = size
        self.log = log
        self.last_emit = 0.0
        self.last_percent: str | None = None
        self.pending: str | None = None

    def feed(self, chunk: str) -> None:
        for m in re.finditer(r"\((\S+)/100%\)", chunk):
            percent = m.group(1)
            if percent == self.last_percent:
                continue
            self.last_percent = percent
            transferred = int(self.size * float(percent) / 100)
            line = f"transferred {render_bytes(transferred, 1)} of {render_bytes(self.size, 1)} ({percent}%)"
            now = time.monotonic()
            if now - self.last_emit >= 1.0 / PROGRESS_LINES_PER_SEC or percent == "100.00":
                self.log(line)
                self.last_emit = now
                self.pending = None
            else:
                self.pending = line

    def flush(self) -> None:
        if self.pending:
            self.log(self.pending)
            self.pending = None


async def convert(
    src: str,
    src_format: str | None,
    dst: str,
    dst_format: str,
    size: int,
    log: LogFn,
    rate_limit: int | None = None,
) -> None:
    """QemuImage::convert: `qemu-img convert -p -n [-r RATE] [-f SRC] -O DST src dst`.

    The target was allocated before (hence -n). PVE prefixes the target with its
    'zeroinit:' driver, which upstream qemu-img lacks; the result is the same for a freshly
    allocated target."""
    cmd = [QEMU_IMG, "convert", "-p", "-n"]
    if rate_limit:
        cmd += ["-r", str(rate_limit)]
    if src_format:
        cmd += ["-f", src_format]
    cmd += ["-O", dst_format, src, dst]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    progress = Progress(size, log)

    async def pump_out() -> None:
        assert proc.stdout
        while chunk := await proc.stdout.read(4096):
            progress.feed(chunk.decode(errors="replace"))

    async def pump_err() -> None:
        assert proc.stderr
        while line := await proc.stderr.readline():
            log(line.decode(errors="replace").rstrip("\n"))

    try:
        await asyncio.gather(pump_out(), pump_err())
        rc = await proc.wait()
    except asyncio.CancelledError:
        # a stopped task takes its qemu-img with it, as PVE kills the worker's process group
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    progress.flush()
    if rc != 0:
        raise die(f"copy failed: command '{cmd_string(cmd)}' failed: exit code {rc}")


def src_format_from_path(path: str) -> str | None:
    """QemuImage::convert takes the source format of a plain path from its extension."""
    m = re.search(rf"\.({QEMU_FORMAT_RE})$", path)
    return m.group(1) if m else None
