"""The coordinator's exceptions: one base, and the refusals its domain code raises.

Domain code (planning an upload, reserving its name, deleting a template) says what it
refuses and why in its own terms: ``Refusal`` subclasses carry the slug clients match
(the API envelope's ``data.error``) and a message for humans, never an HTTP status.
The API maps each kind to its status in one place (coordinator/api/errors.py,
``HTTP_STATUS``), applied by the error middleware (coordinator/app.py).
"""

from __future__ import annotations

from typing import Any

from shared.error_slugs import ErrorSlug
from shared.errors import PvesphereError


class CoordinatorError(PvesphereError):
    """The base of every exception class the coordinator defines."""


class Refusal(CoordinatorError):
    """What was asked cannot be done: ``error`` the slug, ``message`` why, ``extra`` more
    data for the answer (e.g. which form field)."""

    def __init__(self, error: ErrorSlug, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.extra = extra or {}


class Invalid(Refusal):
    """The request itself is wrong (a value that cannot work); asking again cannot help."""


class Unauthorized(Refusal):
    """The caller's credential is missing, wrong or no longer valid."""


class Forbidden(Refusal):
    """The caller is known but may not do this."""


class NotFound(Refusal):
    """Something the request names does not exist."""


class Conflict(Refusal):
    """The request clashes with the current state (a name taken, work under way)."""


class Unavailable(Refusal):
    """A part the request needs (a node's agent) is not there now; asking later may work."""


def not_found(error: ErrorSlug, ident: object) -> NotFound:
    """``error`` (e.g. ``sync_task_not_found``): "<kind> <ident> not found"."""
    kind = error.removesuffix("_not_found").replace("_", " ")
    return NotFound(error, f"{kind} {ident} not found")
