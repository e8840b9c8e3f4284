"""Running qemu-img: no shell, no stdin, in a directory the caller names, under a deadline."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path


async def run_qemu_img(
    args: list[str], seconds: float, cwd: Path, preexec: Callable[[], None] | None = None
) -> tuple[int, str, str]:
    """(exit code, stdout, stderr stripped); TimeoutError after ``seconds`` (qemu-img killed)."""
    cwd.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        "qemu-img",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        cwd=cwd,
        preexec_fn=preexec,
    )
    try:
        async with asyncio.timeout(seconds):
            out, err = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace").strip()
