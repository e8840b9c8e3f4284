"""proxmoxer's local backend, with a deadline that ends the process it waits for.

proxmoxer 2.3's LocalSession runs `pvesh` with ``communicate(timeout=...)`` and lets
TimeoutExpired escape with the process still running: every call PVE did not answer in
time left a pvesh (on PVE a Perl interpreter holding the API's locks) behind, and a zombie
once it ended, for the agent's lifetime. Here the whole process group is killed and reaped
before the timeout is raised. proxmoxer is pinned to 2.3.x (pyproject.toml): ``use_on``
replaces the session the ProxmoxAPI object keeps in its store.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

from proxmoxer import ProxmoxAPI
from proxmoxer.backends.local import LocalSession

REAP_TIMEOUT = 5.0


class BoundedLocalSession(LocalSession):  # type: ignore[misc]
    def _exec(self, cmd: list[str]) -> tuple[str, str, int]:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # pvesh and whatever it started
            proc.communicate(timeout=REAP_TIMEOUT)
            raise
        return stdout.decode(), stderr.decode(), proc.returncode


def local_api(timeout: float) -> ProxmoxAPI:
    """ProxmoxAPI on this node's pvesh whose calls never outlive ``timeout``."""
    api = ProxmoxAPI(backend="local", timeout=timeout)
    store: dict[str, Any] = api._store  # noqa: SLF001 (see the module's docstring)
    store["session"] = BoundedLocalSession(timeout=timeout)
    return api
