"""vm_config: PVE VM options for a template, checked against the allowlist and PVE 9's schema.

Checked where a vm_config arrives (the upload form, and whatever else takes one) and again by
the agent before it runs pvesh as root: it trusts nothing. ``check_options`` needs only the
options; ``check_volumes`` also needs the template's storage, on which EFI vars, TPM state
and a cloud-init drive must be allocated. Each refusal is a ValueError that names the key
and why. What is allowed and why: shared.vm_config_policy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from shared import json_body, vm_config_facts
from shared.pve_formats import lookup
from shared.pve_schema import check_prop, hash_format, indexed_prop, parse_property_string, scalar_text
from shared.text_fields import refuse_control
from shared.validation import Checked
from shared.vm_config_policy import ALLOWED, RESERVED, Rule

# qemu-server Drive.pm $NEW_DISK_RE with the storage required (pvesphere passes no default
# storage), and the cloud-init drive's special volume name
_VOLUME_SHAPES = {
    "new": (re.compile(r"([^/:\s]+):(\d+(?:\.\d+)?)"), "1"),
    "cloudinit": (re.compile(r"([^/:\s]+):cloudinit"), "cloudinit"),
}


def _facts() -> dict[str, dict[str, Any]]:
    facts = vm_config_facts.load()
    unknown = sorted(_formats_not_modelled(facts))
    if unknown:  # a format nobody checks would let anything through: refuse to start
        raise RuntimeError(f"vm_config facts use formats shared.pve_formats does not check: {unknown}")
    return facts


def _formats_not_modelled(props: Mapping[str, dict[str, Any]]) -> set[str]:
    missing: set[str] = set()
    for prop in props.values():
        fmt = prop.get("format")
        if isinstance(fmt, dict):
            missing |= _formats_not_modelled(fmt)
        elif fmt:
            found, _kind = lookup(fmt)
            if found is None:
                missing.add(fmt)
            elif (inner := hash_format(fmt)) is not None:
                missing |= _formats_not_modelled(inner)
    return missing


FACTS = _facts()


def _rule(key: str) -> tuple[dict[str, Any], Rule] | None:
    facts = indexed_prop(FACTS, key)
    if facts is None:
        return None
    name = key if key in ALLOWED else re.sub(r"\d+$", "[n]", key)
    return facts, ALLOWED[name]


def _say(errors: dict[str, str]) -> str:
    """PVE's per-parameter messages, on one line."""
    texts = (text.replace("format error\n", "").strip() for text in errors.values())
    return "; ".join(re.sub(r"\s*\n\s*", "; ", text) for text in texts)


def _text(key: str, value: Any) -> str:
    if isinstance(value, bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return scalar_text(value)
    if not isinstance(value, str):
        raise ValueError(f"vm_config {key} must be a string, number or boolean")
    return refuse_control(f"vm_config {key}", value)


def _narrowed(key: str, sub: str, value: str, facts: dict[str, Any], rule: Rule) -> None:
    narrow = rule.narrow.get(sub)
    errors: dict[str, str] = {}
    if narrow:
        check_prop(value, {**facts, **narrow}, key, errors)
    if errors:
        what = f"{sub}={value!r}" if sub else repr(value)
        raise ValueError(f"vm_config {key}: {what} is not allowed: {rule.why}")


def _volume(key: str, parsed: dict[str, Any], rule: Rule) -> str | None:
    """The storage a drive option allocates its new volume on (None: not a drive option)."""
    if rule.volume is None:
        return None
    shape, example = _VOLUME_SHAPES[rule.volume]
    found = shape.fullmatch(str(parsed.get("file", "")))
    if not found:
        raise ValueError(
            f"vm_config {key}: {rule.why}: must be allocated on the template's storage, like"
            f" '<storage>:{example}' (got {parsed.get('file', '')!r}; an existing volume or a host"
            " path is not allowed)"
        )
    return found.group(1)


def check_option(key: str, value: Any) -> str:
    """One option: allowed, valid for PVE, within the policy; returns its value as text."""
    if key in RESERVED:
        raise ValueError(f"vm_config key {key!r} is set by pvesphere and cannot be overridden")
    found = _rule(key)
    if found is None:
        raise ValueError(f"vm_config key {key!r} is not allowed")
    facts, rule = found
    text = _text(key, value)
    errors: dict[str, str] = {}
    check_prop(text, facts, key, errors)
    if errors:
        raise ValueError(f"vm_config {key}: {_say(errors)}")
    if rule.check is not None:
        try:
            rule.check(text)
        except ValueError as exc:
            raise ValueError(f"vm_config {key}: {exc}") from None
    fmt = hash_format(facts.get("format"))
    if fmt is None:
        _narrowed(key, "", text, facts, rule)
        return text
    parsed = parse_property_string(fmt, text, key)  # check_prop has parsed it already
    for sub, subvalue in parsed.items():
        if sub not in rule.subkeys:
            raise ValueError(f"vm_config {key}: {sub!r} is not allowed")
        _narrowed(key, sub, str(subvalue), fmt[sub], rule)
    _volume(key, parsed, rule)
    return text


def check_options(options: Mapping[str, Any]) -> dict[str, str]:
    """Every option checked (check_option); values as text, booleans as 1 and 0."""
    checked = {str(key): check_option(str(key), value) for key, value in options.items()}
    cloudinit = sorted(key for key in checked if (found := _rule(key)) and found[1].volume == "cloudinit")
    if len(cloudinit) > 1:
        raise ValueError(
            f"vm_config may have one cloud-init drive, not {len(cloudinit)} ({', '.join(cloudinit)})"
        )
    return checked


def check_volumes(options: Mapping[str, str], storage: str) -> None:
    """The new volumes of EFI vars, TPM state and a cloud-init drive are on ``storage``
    (``options`` as check_options returned them)."""
    for key, text in options.items():
        found = _rule(key)
        fmt = hash_format(found[0].get("format")) if found else None
        if found is None or fmt is None:
            continue
        on = _volume(key, parse_property_string(fmt, text, key), found[1])
        if on is not None and on != storage:
            raise ValueError(
                f"vm_config {key}: must be allocated on the template's storage {storage!r}, not {on!r}"
            )


SUMMARY = (
    "A JSON object of PVE VM options, e.g."
    ' {"cores": 4, "memory": 4096, "net0": "virtio,bridge=vmbr0,tag=42", "ipconfig0": "ip=dhcp"}.'
    f" Allowed: {', '.join(sorted(ALLOWED))} ([n]: 0, 1, ...). Each value is checked against PVE 9's"
    " schema, property strings sub-key by sub-key; serial ports only 'socket', rng0 only"
    " /dev/urandom; efidisk0, tpmstate0 and one cloud-init drive (ide, sata or scsi other than"
    " scsi0) only as new volumes on the template's storage (STORAGE:1, STORAGE:cloudinit)."
    " Anything else (args, hookscript, host devices or paths, import-from, other disks) is a"
    " 400 naming the key."
)


class VmConfig(dict[str, str], Checked):
    """vm_config: a JSON object (or, from a form, its text) of PVE VM options from the allowlist."""

    json_schema = {
        "type": "object",
        "additionalProperties": {"type": ["string", "integer", "number", "boolean"]},
        "description": SUMMARY,
    }

    @classmethod
    def parse(cls, raw: Any) -> VmConfig:
        value = raw
        if isinstance(raw, str):
            try:
                value = json_body.decode(raw.encode()) if raw.strip() else {}
            except ValueError:
                raise ValueError('vm_config must be a JSON object, e.g. {"memory": 4096}') from None
        if not isinstance(value, dict):
            raise ValueError("vm_config must be a JSON object")
        return cls(check_options(value))
