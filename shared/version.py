"""The product version, read from the installed distribution's metadata, and which versions
of the coordinator and an agent work together.

A cluster is upgraded node by node, so an agent and its coordinator may be a release apart:
they must share the major version and be at most one minor version apart (messages gain
fields with defaults and ignore fields they do not know, shared/messages/; a field is
removed only after a minor version that no longer reads it). Anything further apart is
refused when the agent registers, with both versions named.

Before 1.0 (initial development, where semantic versioning lets anything change) the minor
versions must match: 0.2 changed how nodes copy images (the guest view under a signed chunk
manifest, which a 0.1 agent's tickets refuse), so a 0.1 agent is refused when it registers
rather than failing every copy.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("pvesphere-templates")
except PackageNotFoundError:  # running from a checkout that was never installed
    VERSION = "0.0.0+unknown"

# How many minor versions an agent may be ahead of or behind its coordinator (from 1.0 on).
MINOR_SKEW = 1
_RELEASE = re.compile(r"([0-9]+)\.([0-9]+)(?:\.[0-9]+)?")


def major_minor(text: str) -> tuple[int, int] | None:
    """'1.4.2', '1.4.0rc1', '1.4.2+local' -> (1, 4); None when it is no version."""
    m = _RELEASE.match(text)
    return (int(m[1]), int(m[2])) if m else None


def incompatible(agent: str, coordinator: str) -> str | None:
    """Why an agent of version ``agent`` cannot work with a coordinator of ``coordinator``,
    or None when they can."""
    ours, theirs = major_minor(coordinator), major_minor(agent)
    if theirs is None:
        return f"agent version {agent!r} is not a version (coordinator {coordinator})"
    if ours is None:  # a coordinator that does not know its own version judges nothing
        return None
    skew = minor_skew(ours[0])
    if theirs[0] == ours[0] and abs(theirs[1] - ours[1]) <= skew:
        return None
    apart = f"at most {skew} minor version apart" if skew else "of the same minor version (before 1.0)"
    return (
        f"agent version {agent} cannot work with coordinator version {coordinator}: "
        f"they must have the same major version and be {apart}; upgrade the older of the two"
    )


def minor_skew(major: int) -> int:
    """How many minor versions apart an agent and a coordinator of ``major`` may be."""
    return MINOR_SKEW if major >= 1 else 0
