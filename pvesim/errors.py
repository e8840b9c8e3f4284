"""API errors shaped like PVE's (PVE::Exception and plain Perl `die`)."""

from __future__ import annotations


class ApiError(Exception):
    """An error the API answers with: HTTP status, message (Perl style, usually ending in a
    newline) and optional per-parameter errors."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors

    @property
    def reason(self) -> str:
        # pve-http-server only sends the first line of the message as HTTP reason phrase
        first = self.message.split("\n", 1)[0]
        return first or "Internal Server Error"

    def stringify(self) -> str:
        """How PVE::Exception prints itself (what the CLI shows on stderr)."""
        msg = f"{self.status} {self.message}" if self.is_exception else self.message
        if not msg.endswith("\n"):
            msg += "\n"
        for key, text in (self.errors or {}).items():
            msg += f"{key}: {text}\n"
        return msg

    # Errors raised as PVE::Exception carry their code in the printed text ("400 ..."),
    # plain `die` strings do not.
    is_exception = True


class PerlDie(ApiError):
    """A plain `die "...\\n"` inside an API handler: HTTP 500 with the text as message."""

    is_exception = False

    def __init__(self, message: str) -> None:
        super().__init__(500, message)


def die(message: str) -> PerlDie:
    return PerlDie(message if message.endswith("\n") else message + "\n")


def param_error(errors: dict[str, str]) -> ApiError:
    """PVE::Exception::raise_param_exc."""
    return ApiError(400, "Parameter verification failed.\n", errors)


def perm_error(what: str = "") -> ApiError:
    """PVE::Exception::raise_perm_exc."""
    msg = "Permission check failed"
    if what:
        msg += f" ({what})"
    return ApiError(403, msg + "\n")
