"""Every message between the parts: the bodies the coordinator and the agents send each
other, and the agents send their peers, as msgspec structs that both sides import.

One module per conversation:
    link.py       agent -> coordinator: enrolment, register, heartbeat, goodbye, tickets,
                  staged copies an agent may evict (the coordinator's /agent-api/v1)
    uploads.py    coordinator -> agent: an upload streamed in, staging listed and emptied
    imports.py    coordinator -> agent: a staged image imported as a VM template
    exports.py    coordinator -> agent: a VM's disk exported into staging (template from a VM)
    downloads.py  coordinator -> agent: an image downloaded from a URL into staging
    vms.py        coordinator -> agent: our VMs listed and destroyed
    transfers.py  coordinator -> agent and agent -> agent: copies along a chain of hops
    health.py     anyone -> agent: /health, /v1/whoami; an agent's error body
    events.py     coordinator -> API client: live events over a WebSocket (GET /api/v1/events)

The receiving side decodes with ``shared.validation.parse`` (a 400 naming every bad field);
answers are read with ``decode`` below. Structs that travel between parts derive from
``Model``, which ignores fields it does not know: a peer one minor version newer may send
more (shared/version.py says which versions work together), and a field added later has a
default, so an older peer's message still decodes.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from shared.validation import Checked, dec_hook

M = TypeVar("M")


def _enc_hook(value: Any) -> Any:
    # Checked fields (VmName, VmConfig, ...) are subclasses of str or dict: sent as those.
    if isinstance(value, Checked):
        return next(base for base in type(value).__mro__ if base.__module__ == "builtins")(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


_ENCODER = msgspec.json.Encoder(enc_hook=_enc_hook)


def encode(message: Any) -> bytes:
    """``message`` (a struct, or builtins holding structs) as JSON."""
    return _ENCODER.encode(message)


def to_builtins(message: Any) -> Any:
    """``message`` as dicts, lists and scalars (for a JSON envelope built elsewhere)."""
    return msgspec.to_builtins(message, enc_hook=_enc_hook)


def decode(kind: type[M], raw: bytes | Any) -> M:
    """An answer (raw JSON, or JSON already decoded) as ``kind``; msgspec.ValidationError
    naming the field (``$.vms[0].vmid``) when it is not one."""
    if isinstance(raw, bytes | bytearray | memoryview):
        return msgspec.json.decode(raw, type=kind, dec_hook=dec_hook)
    return msgspec.convert(raw, kind, strict=False, dec_hook=dec_hook)
