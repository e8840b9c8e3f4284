"""PVE::JSONSchema in Python: check a value against a PVE API property schema.

Follows pve-common's PVE/JSONSchema.pm (check_prop/check_type/check_object,
parse_property_string) so the error texts are the ones a real PVE node answers with. The
schemas themselves are facts taken from PVE's API description (pve-docs apidata): `facts`
keeps those (names, types, enums, patterns, formats, bounds, defaults), never descriptions.
Named formats are in shared.pve_formats.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any

from shared.pve_formats import FormatError, HashFormat, format_size, lookup, parse_size, split_list

_FACT_KEYS = (
    "type",
    "optional",
    "enum",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "maxLength",
    "minLength",
    "default",
    "requires",
    "alias",
    "default_key",
    "keyAlias",
)

# Highest index of the "name[n]" properties whose range the schema does not spell out as
# "(n is 0 to N)"; from qemu-server (MAX_NETS 32, MAX_HOSTPCI_DEVICES 16, MAX_NUMA 8,
# MAX_UNUSED_DISKS 256, max_virtiofs 10, MAX_USB_DEVICES 14).
_INDEX_MAX_FALLBACK = {
    "net": 31,
    "ipconfig": 31,
    "hostpci": 15,
    "numa": 7,
    "unused": 255,
    "virtiofs": 9,
    "usb": 13,
}
_RANGE_RE = re.compile(r"\(n is 0 to (\d+)\)")


# ---------------------------------------------------------------------------------------------
# facts from apidata


def facts(prop: dict[str, Any]) -> dict[str, Any]:
    """The checkable facts of one apidata property (sub-properties of hash formats too)."""
    out: dict[str, Any] = {}
    for key in _FACT_KEYS:
        if key not in prop:
            continue
        value = prop[key]
        if key == "format" and isinstance(value, dict):
            value = {name: facts(sub) for name, sub in sorted(value.items())}
        out[key] = value
    return out


def property_facts(name: str, prop: dict[str, Any]) -> dict[str, Any]:
    """`facts`, plus for a "name[n]" property the highest n it takes (index_max)."""
    out = facts(prop)
    if name.endswith("[n]"):
        found = _RANGE_RE.search(prop.get("description") or "")
        out["index_max"] = int(found.group(1)) if found else _INDEX_MAX_FALLBACK[name[:-3]]
    return out


def walk(nodes: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """Every node of apidata's path tree."""
    for node in nodes:
        yield node
        yield from walk(node.get("children") or [])


def method_properties(apidata: list[dict[str, Any]], path: str, method: str) -> dict[str, Any]:
    """The parameter properties of `method path`, as apidata has them."""
    by_path = {node["path"]: node for node in walk(apidata)}
    params = by_path[path]["info"][method].get("parameters") or {}
    return dict(params.get("properties") or {})


def indexed_prop(props: dict[str, dict[str, Any]], name: str) -> dict[str, Any] | None:
    """Schema of `name`, expanding "scsi[n]" style entries to scsi0..scsiN."""
    found = props.get(name)
    if found is not None:
        return found
    m = re.fullmatch(r"([a-z]+)(\d+)", name)
    if m:
        prop = props.get(f"{m.group(1)}[n]")
        if prop is not None and int(m.group(2)) <= prop["index_max"] and str(int(m.group(2))) == m.group(2):
            return prop
    return None


# ---------------------------------------------------------------------------------------------
# formats and property strings


def hash_format(fmt: str | dict[str, Any] | None) -> dict[str, dict[str, Any]] | None:
    """The sub-key schemas of a property-string format (inline or registered by name)."""
    if isinstance(fmt, dict):
        return fmt
    if fmt:
        found, _kind = lookup(fmt)
        if isinstance(found, HashFormat):
            return found.props
    return None


def check_format(fmt: str | dict[str, Any], value: str, path: str) -> None:
    if isinstance(fmt, dict):
        parse_property_string(fmt, value, path)
        return
    found, kind = lookup(fmt)
    if found is None:
        return  # a format not modelled here is accepted as is
    if isinstance(found, HashFormat):
        parsed = parse_property_string(found.props, value, path)
        if found.validate is not None:
            found.validate(parsed)
    elif kind == "list":
        for item in split_list(value):
            found(item)
    elif kind == "opt":
        if value:
            found(value)
    else:
        found(value)


def parse_boolean(value: str) -> int | None:
    if re.fullmatch(r"1|on|yes|true", value, re.I):
        return 1
    if re.fullmatch(r"0|off|no|false", value, re.I):
        return 0
    return None


def parse_property_string(fmt: dict[str, Any], data: str, path: str = "") -> dict[str, Any]:
    """PVE::JSONSchema::parse_property_string for hash formats (drive strings and the like)."""
    res: dict[str, Any] = {}
    default_key: str | None = None
    for part in data.split(","):
        if not part.strip():
            continue
        m = re.fullmatch(r"([^=]+)=(.+)", part, re.S)
        if m:
            key, val = m.group(1), m.group(2)
            if key in res:
                raise FormatError(f"duplicate key in comma-separated list property: {key}\n")
            sub = fmt.get(key)
            if sub and sub.get("alias"):
                key_alias = sub.get("keyAlias")
                if key_alias:
                    if key_alias in res:
                        raise FormatError(f"key alias '{key_alias}' is already defined\n")
                    res[key_alias] = key
                key = sub["alias"]
                sub = fmt.get(key)
                if key in res:
                    raise FormatError(f"key '{key}' is already defined (via alias)\n")
            if not sub:
                raise FormatError(f"invalid key in comma-separated list property: {key}\n")
            if sub.get("type") == "boolean":
                b = parse_boolean(val)
                val = str(b) if b is not None else val
            res[key] = val
        elif "=" not in part:
            if default_key:
                raise FormatError(f"duplicate key in comma-separated list property: {default_key}\n")
            for key, sub in fmt.items():
                if sub.get("default_key"):
                    default_key = key
                    if key in res:
                        raise FormatError(f"duplicate key in comma-separated list property: {key}\n")
                    if sub.get("type") == "boolean":
                        b = parse_boolean(part)
                        part = str(b) if b is not None else part
                    res[key] = part
                    break
            if not default_key:
                raise FormatError("value without key, but schema does not define a default key\n")
        else:
            raise FormatError("missing key in comma-separated list property\n")
    errors: dict[str, str] = {}
    check_object(path, fmt, res, False, errors)
    if errors:
        text = "format error\n" + "".join(f"{k}: {v}\n" for k, v in errors.items())
        raise FormatError(text)
    return res


def print_property_string(data: dict[str, Any], fmt: dict[str, Any]) -> str:
    """PVE::JSONSchema::print_property_string: default key first, then required, then the
    rest, sorted; 'disk-size' values rendered with format_size; a key with a key alias
    printed together with it ("virtio=<mac>" for model and macaddr)."""
    default_key = next((k for k, s in fmt.items() if s.get("default_key")), None)
    key_alias = {s["keyAlias"]: s["alias"] for s in fmt.values() if s.get("alias") and s.get("keyAlias")}
    done: set[str] = set()
    parts: list[str] = []

    def text_of(key: str) -> str:
        text = str(data[key])
        if (fmt.get(key) or {}).get("format") == "disk-size":
            # parsed drives keep sizes as written ("64M"); PVE prints them normalised
            size = parse_size(text)
            text = format_size(size) if size is not None else text
        return text

    def add(key: str, is_default: bool = False) -> None:
        if key in done or data.get(key) is None:
            return
        done.add(key)
        combine = key_alias.get(key)
        if combine is not None and data.get(combine) is not None:
            done.add(combine)
            parts.append(f"{text_of(key)}={text_of(combine)}")
        else:
            parts.append(text_of(key) if is_default else f"{key}={text_of(key)}")

    if default_key:
        add(default_key, True)
    for key in sorted(data):
        if key in fmt and not fmt[key].get("optional"):
            add(key)
    for key in sorted(data):
        add(key)
    return ",".join(parts)


# ---------------------------------------------------------------------------------------------
# validation (PVE::JSONSchema::check_prop and friends)

_NUMBER_RE = re.compile(r"[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?")
_INTEGER_RE = re.compile(r"[+-]?\d+")


def _perl_ref(value: Any) -> str | None:
    """Perl's ref() of a decoded JSON value (None for plain scalars)."""
    if isinstance(value, bool):
        return "JSON::PP::Boolean"
    if isinstance(value, list):
        return "ARRAY"
    if isinstance(value, dict):
        return "HASH"
    return None


def scalar_text(value: Any) -> str:
    """How Perl stringifies a decoded JSON scalar."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return str(int(value))
    return str(value)


def _add_error(errors: dict[str, str], path: str, msg: str) -> None:
    path = path or "_root"
    errors[path] = f"{errors[path]}\\n{msg}" if path in errors else msg


def _check_type(path: str, typ: str | None, value: Any, errors: dict[str, str]) -> bool:
    if not typ or typ == "any":
        return True
    ref = _perl_ref(value)
    if typ == "array":
        if ref != "ARRAY":
            _add_error(errors, path, f"type check ('{typ}') failed")
            return False
        return True
    if typ == "object":
        if ref != "HASH":
            _add_error(errors, path, f"type check ('{typ}') failed")
            return False
        return True
    if ref:
        if typ == "boolean" and ref == "JSON::PP::Boolean":
            return True
        _add_error(errors, path, f"type check ('{typ}') failed - got {ref}")
        return False
    text = scalar_text(value)
    ok = True
    if typ == "boolean":
        ok = text in ("0", "1")
    elif typ == "integer":
        ok = bool(_INTEGER_RE.fullmatch(text))
    elif typ == "number":
        ok = bool(_NUMBER_RE.fullmatch(text))
    if not ok:
        _add_error(errors, path, f"type check ('{typ}') failed - got '{text}'")
    return ok


def _perl_regex(pattern: str) -> re.Pattern[str]:
    # Perl stringified qr// objects look like (?^:...), which Python does not know
    return re.compile(pattern.replace("(?^:", "(?:"))


def check_prop(value: Any, schema: dict[str, Any], path: str, errors: dict[str, str]) -> None:
    if schema.get("alias"):
        return
    if value is None:
        if not schema.get("optional"):
            _add_error(errors, path, "property is missing and it is not optional")
        return
    if not _check_type(path, schema.get("type"), value, errors):
        return
    if _perl_ref(value) in ("ARRAY", "HASH"):
        return
    text = scalar_text(value)
    fmt = schema.get("format")
    if fmt:
        try:
            check_format(fmt, text, path)
        except FormatError as exc:
            _add_error(errors, path, f"invalid format - {exc}")
            return
    pattern = schema.get("pattern")
    if pattern and not _perl_regex(pattern).fullmatch(text):
        _add_error(errors, path, "value does not match the regex pattern")
        return
    if schema.get("maxLength") is not None and len(text) > int(schema["maxLength"]):
        _add_error(errors, path, f"value may only be {schema['maxLength']} characters long")
        return
    if schema.get("minLength") is not None and len(text) < int(schema["minLength"]):
        _add_error(errors, path, f"value must be at least {schema['minLength']} characters long")
        return
    if _NUMBER_RE.fullmatch(text):
        num = float(text)
        if schema.get("maximum") is not None and num > float(schema["maximum"]):
            _add_error(errors, path, f"value must have a maximum value of {schema['maximum']}")
            return
        if schema.get("minimum") is not None and num < float(schema["minimum"]):
            _add_error(errors, path, f"value must have a minimum value of {schema['minimum']}")
            return
    enum = schema.get("enum")
    if enum and text not in [str(e) for e in enum]:
        _add_error(
            errors,
            path,
            f"value '{text}' does not have a value in the enumeration '{', '.join(enum)}'",
        )


def check_object(
    path: str,
    props: dict[str, dict[str, Any]] | Callable[[str], dict[str, Any] | None],
    value: dict[str, Any],
    additional: bool,
    errors: dict[str, str],
    names: Iterable[str] | None = None,
) -> None:
    lookup_prop = props if callable(props) else props.get
    all_names = list(names) if names is not None else list(props)  # type: ignore[arg-type]
    for key in all_names:
        sub = lookup_prop(key)
        if sub is not None:
            check_prop(value.get(key), sub, f"{path}.{key}" if path else key, errors)
    for key in value:
        sub = lookup_prop(key)
        newpath = f"{path}.{key}" if path else key
        if sub is not None:
            requires = sub.get("requires")
            if isinstance(requires, str) and value.get(requires) is None:
                rpath = f"{path}.{requires}" if path else requires
                _add_error(errors, rpath, f"missing property required by '{newpath}'")
            if key not in all_names:
                check_prop(value[key], sub, newpath, errors)
            continue
        if not additional:
            _add_error(
                errors,
                newpath,
                "property is not defined in schema and the schema does not allow additional properties",
            )


def extract_command(
    argv: list[str], extract: Callable[[list[dict[str, Any]]], dict[str, Any]], usage: str
) -> int:
    """`python -m ... extract APIDATA.json`: the extracted facts as sorted JSON on stdout."""
    if len(argv) != 2 or argv[0] != "extract":
        print(f"usage: {usage}")
        return 2
    with open(argv[1], encoding="utf-8") as fh:
        data = json.load(fh)
    json.dump(extract(data), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0
