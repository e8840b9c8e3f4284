"""What `pvesphere` exits with, so that a script can tell why it stopped."""

from __future__ import annotations

from enum import IntEnum

from shared.errors import PvesphereError


class UsageError(PvesphereError):
    """The command line cannot be carried out as given; the message says what to change."""


class Exit(IntEnum):
    OK = 0
    # The API took the request, but the work it started ended failed (an import, a sync
    # task, a clone) or was canceled.
    WORK_FAILED = 1
    # The command line is wrong: an unknown option, a missing URL or token, a file that
    # does not exist (argparse exits 2 too).
    USAGE = 2
    # The API answered with an error (4xx/5xx): its message is printed as it says it.
    API_ERROR = 3
    # The coordinator could not be reached (connection refused, DNS, TLS).
    UNREACHABLE = 4
    # Ctrl-C: the work started on the coordinator goes on.
    INTERRUPTED = 130


DOC = """exit codes:
  0    done
  1    the work failed (import, sync task or clone ended failed or canceled)
  2    usage error (bad option, no URL or token, unreadable file)
  3    the API refused the request (its message and error slug are printed)
  4    the coordinator could not be reached (connection, DNS or TLS)
  130  interrupted (Ctrl-C); work already started goes on at the coordinator"""
