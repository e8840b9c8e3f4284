"""The API schema subset the emulator serves, and PVE::JSONSchema-style validation.

`python -m pvesim.schema extract APIDATA.json > pvesim/schema_subset.json` regenerates the
committed subset from PVE's own API description (pve-docs apidata). Only facts are kept
(names, types, enums, patterns, formats, bounds, defaults), never descriptions.

Validation follows pve-common's PVE/JSONSchema.pm (check_prop/check_type/check_object) so the
error texts are the ones a real PVE node answers with.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from pvesim.errors import ApiError, param_error

# (path, method) pairs the emulator implements; the subset holds exactly these.
SERVED: tuple[tuple[str, str], ...] = (
    ("/version", "GET"),
    ("/cluster/status", "GET"),
    ("/cluster/resources", "GET"),
    ("/cluster/nextid", "GET"),
    ("/cluster/tasks", "GET"),
    ("/nodes", "GET"),
    ("/nodes/{node}/status", "GET"),
    ("/nodes/{node}/storage", "GET"),
    ("/nodes/{node}/storage/{storage}/status", "GET"),
    ("/nodes/{node}/storage/{storage}/content", "GET"),
    ("/nodes/{node}/storage/{storage}/content/{volume}", "GET"),
    ("/nodes/{node}/storage/{storage}/content/{volume}", "DELETE"),
    ("/storage", "GET"),
    ("/storage/{storage}", "GET"),
    ("/nodes/{node}/qemu", "GET"),
    ("/nodes/{node}/qemu", "POST"),
    ("/nodes/{node}/qemu/{vmid}", "GET"),
    ("/nodes/{node}/qemu/{vmid}", "DELETE"),
    ("/nodes/{node}/qemu/{vmid}/config", "GET"),
    ("/nodes/{node}/qemu/{vmid}/status/current", "GET"),
    ("/nodes/{node}/qemu/{vmid}/template", "POST"),
    ("/nodes/{node}/qemu/{vmid}/clone", "POST"),
    ("/nodes/{node}/tasks", "GET"),
    ("/nodes/{node}/tasks/{upid}", "GET"),
    ("/nodes/{node}/tasks/{upid}", "DELETE"),
    ("/nodes/{node}/tasks/{upid}/status", "GET"),
    ("/nodes/{node}/tasks/{upid}/log", "GET"),
)

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
# extraction


def _facts(prop: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _FACT_KEYS:
        if key not in prop:
            continue
        value = prop[key]
        if key == "format" and isinstance(value, dict):
            value = {name: _facts(sub) for name, sub in sorted(value.items())}
        out[key] = value
    return out


def _walk(nodes: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for node in nodes:
        yield node
        yield from _walk(node.get("children") or [])


def extract(apidata: list[dict[str, Any]]) -> dict[str, Any]:
    """The subset of `apidata` for the SERVED (path, method) pairs."""
    by_path = {node["path"]: node for node in _walk(apidata)}
    endpoints: dict[str, Any] = {}
    for path, method in SERVED:
        info = by_path[path]["info"][method]
        params = info.get("parameters") or {}
        props: dict[str, Any] = {}
        for name, prop in sorted((params.get("properties") or {}).items()):
            facts = _facts(prop)
            if name.endswith("[n]"):
                base = name[:-3]
                found = _RANGE_RE.search(prop.get("description") or "")
                facts["index_max"] = int(found.group(1)) if found else _INDEX_MAX_FALLBACK[base]
            props[name] = facts
        returns = info.get("returns") or {}
        endpoints[f"{method} {path}"] = {
            "additionalProperties": params.get("additionalProperties", 1),
            "properties": props,
            "proxyto": info.get("proxyto"),
            "returns": {k: returns[k] for k in ("type", "optional") if k in returns},
        }
    return {
        "generator": "python -m pvesim.schema extract apidata-v9.json",
        "endpoints": endpoints,
    }


# ---------------------------------------------------------------------------------------------
# loading and routing


@dataclass
class MethodSchema:
    path: str
    method: str
    additional_properties: bool
    properties: dict[str, dict[str, Any]]
    returns: dict[str, Any]
    proxyto: str | None = None
    _indexed: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._indexed = {name[:-3]: prop for name, prop in self.properties.items() if name.endswith("[n]")}

    def prop(self, name: str) -> dict[str, Any] | None:
        """Schema of `name`, expanding "scsi[n]" style entries to scsi0..scsiN."""
        found = self.properties.get(name)
        if found is not None:
            return found
        m = re.fullmatch(r"([a-z]+)(\d+)", name)
        if m and m.group(1) in self._indexed:
            prop = self._indexed[m.group(1)]
            if int(m.group(2)) <= prop["index_max"] and str(int(m.group(2))) == m.group(2):
                return prop
        return None

    def names(self) -> list[str]:
        """Every property name, with "[n]" entries expanded."""
        out: list[str] = []
        for name, prop in self.properties.items():
            if name.endswith("[n]"):
                out.extend(f"{name[:-3]}{i}" for i in range(prop["index_max"] + 1))
            else:
                out.append(name)
        return out

    def path_params(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", self.path)


def _template_regex(path: str) -> re.Pattern[str]:
    out = ""
    for part in path.strip("/").split("/"):
        m = re.fullmatch(r"\{(\w+)\}", part)
        if m:
            # volume IDs contain '/', PVE registers that path with an empty fragment delimiter
            body = ".+" if m.group(1) == "volume" else "[^/]+"
            out += f"/(?P<{m.group(1)}>{body})"
        else:
            out += "/" + re.escape(part)
    return re.compile(out or "/")


class Schema:
    def __init__(self, data: dict[str, Any]) -> None:
        self.methods: dict[tuple[str, str], MethodSchema] = {}
        self._routes: list[tuple[re.Pattern[str], str]] = []
        seen: set[str] = set()
        for key, entry in data["endpoints"].items():
            method, path = key.split(" ", 1)
            self.methods[(path, method)] = MethodSchema(
                path=path,
                method=method,
                additional_properties=bool(entry["additionalProperties"]),
                properties=entry["properties"],
                returns=entry["returns"],
                proxyto=entry.get("proxyto"),
            )
            if path not in seen:
                seen.add(path)
                self._routes.append((_template_regex(path), path))
        # more literal segments first, so "/nodes/{node}/tasks/{upid}/log" wins over "{upid}"
        self._routes.sort(key=lambda r: -r[1].count("/"))

    def match(self, method: str, rel_path: str) -> tuple[MethodSchema, dict[str, str]]:
        """The schema for `method rel_path` plus the path parameters; 501 like PVE if none."""
        for regex, path in self._routes:
            m = regex.fullmatch(rel_path)
            if m and (path, method) in self.methods:
                return self.methods[(path, method)], dict(m.groupdict())
        raise ApiError(501, f"Method '{method} {rel_path}' not implemented")

    def find_path(self, rel_path: str) -> str | None:
        for regex, path in self._routes:
            if regex.fullmatch(rel_path):
                return path
        return None


_SCHEMA: Schema | None = None


def load() -> Schema:
    global _SCHEMA
    if _SCHEMA is None:
        text = resources.files("pvesim").joinpath("schema_subset.json").read_text("utf-8")
        _SCHEMA = Schema(json.loads(text))
    return _SCHEMA


# ---------------------------------------------------------------------------------------------
# formats (pve-common JSONSchema.pm, pve-storage Plugin.pm, qemu-server)


class FormatError(Exception):
    """A format check failed; str() is the Perl die message including its newline."""


FormatFn = Callable[[str], None]
FORMATS: dict[str, FormatFn] = {}

CONFIGID_RE = re.compile(r"[a-z][a-z0-9_-]+", re.I)
STORAGE_ID_RE = re.compile(r"[a-z][a-z0-9\-_.]*[a-z0-9]", re.I)
VOLUME_ID_RE = re.compile(r"([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)", re.I | re.S)
NODE_RE = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?")
DNS_PART = r"([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)"
TAG_RE = re.compile(r"[a-z0-9_][a-z0-9_\-+.]*", re.I)
# dir plugin content types (pve-storage DirPlugin plugindata), which include all others
CONTENT_TYPES = ("images", "rootdir", "vztmpl", "iso", "backup", "snippets", "none", "import")


def _fmt(name: str) -> Callable[[FormatFn], FormatFn]:
    def deco(fn: FormatFn) -> FormatFn:
        FORMATS[name] = fn
        return fn

    return deco


@_fmt("pve-node")
def _pve_node(v: str) -> None:
    if not NODE_RE.fullmatch(v):
        raise FormatError("value does not look like a valid node name\n")


@_fmt("pve-vmid")
def _pve_vmid(v: str) -> None:
    if not re.fullmatch(r"[1-9][0-9]{2,8}", v):
        raise FormatError("value does not look like a valid VM ID\n")


@_fmt("pve-storage-id")
def _pve_storage_id(v: str) -> None:
    if len(v) < 2:
        raise FormatError(f"storage ID '{v}' cannot be shorter than 2 characters\n")
    if not STORAGE_ID_RE.fullmatch(v):
        raise FormatError(f"storage ID '{v}' contains illegal characters\n")


@_fmt("pve-storage-content")
def _pve_storage_content(v: str) -> None:
    if v not in CONTENT_TYPES:
        raise FormatError(f"invalid content type '{v}'\n")


@_fmt("pve-configid")
def _pve_configid(v: str) -> None:
    if not CONFIGID_RE.fullmatch(v):
        raise FormatError(f"invalid configuration ID '{v}'\n")


@_fmt("pve-volume-id")
def _pve_volume_id(v: str) -> None:
    if not VOLUME_ID_RE.fullmatch(v):
        raise FormatError(f"unable to parse volume ID '{v}'\n")


@_fmt("pve-volume-id-or-absolute-path")
def _volid_or_path(v: str) -> None:
    if not v.startswith("/"):
        _pve_volume_id(v)


@_fmt("pve-volume-id-or-qm-path")
def _volid_or_qm_path(v: str) -> None:
    if v not in ("none", "cdrom"):
        _volid_or_path(v)


@_fmt("disk-size")
def _disk_size(v: str) -> None:
    if parse_size(v) is None:
        raise FormatError(f"value does not look like a valid disk size: {v}\n")


@_fmt("dns-name")
def _dns_name(v: str) -> None:
    if not re.fullmatch(rf"({DNS_PART}\.)*{DNS_PART}", v):
        raise FormatError("value does not look like a valid DNS name\n")


@_fmt("urlencoded")
def _urlencoded(v: str) -> None:
    if not re.fullmatch(r"[-%a-zA-Z0-9_.!~*'()]*", v):
        raise FormatError(f"invalid urlencoded string: {v}\n")


@_fmt("pve-tag")
def _pve_tag(v: str) -> None:
    if not TAG_RE.fullmatch(v):
        raise FormatError("invalid characters in tag\n")


@_fmt("pve-task-status-type")
def _task_status_type(v: str) -> None:
    if not re.fullmatch(r"ok|error|warning|unknown", v, re.I):
        raise FormatError(f"invalid status '{v}'\n")


@_fmt("pve-poolid")
def _pve_poolid(v: str) -> None:
    if len(v.split("/")) > 3:
        raise FormatError(f"pool name '{v}' nested too deeply (max levels = 3)\n")
    if not re.fullmatch(r"[A-Za-z0-9.\-_]+(?:/[A-Za-z0-9.\-_]+){0,2}", v):
        raise FormatError(f"pool name '{v}' contains invalid characters\n")


@_fmt("pve-bridge-id")
def _pve_bridge_id(v: str) -> None:
    if not re.fullmatch(r"[-_.\w\d]+", v):
        raise FormatError(f"invalid bridge ID '{v}'\n")


@_fmt("mac-addr")
def _mac_addr(v: str) -> None:
    if not re.fullmatch(r"[a-f0-9][02468ace](?::[a-f0-9]{2}){5}", v, re.I):
        raise FormatError("value does not look like a valid unicast MAC address\n")


@_fmt("pve-startup-order")
def _startup_order(v: str) -> None:
    for part in v.split(","):
        if part.strip() and not re.fullmatch(r"(order=)?\d+|up=\d+|down=\d+", part):
            raise FormatError("unable to parse startup options\n")


def split_list(text: str) -> list[str]:
    """PVE::Tools::split_list."""
    if "\0" in text:
        return text.split("\0")
    return [p for p in re.split(r"\s+", re.sub(r"[,;]", " ", text).strip()) if p]


def parse_size(value: str) -> int | None:
    """PVE::JSONSchema::parse_size: '2G', '512M', '1024' (bytes) ..."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT](?:iB)?)?", value)
    if not m:
        return None
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    unit = (m.group(2) or "")[:1]
    return int(float(m.group(1)) * mult.get(unit, 1))


def format_size(size: int) -> str:
    """PVE::JSONSchema::format_size: the largest unit that divides the size exactly."""
    size = int(size)
    for unit in ("", "K", "M", "G"):
        if size % 1024:
            return f"{size}{unit}"
        size //= 1024
    return f"{size}T"


def check_format(fmt: str | dict[str, Any], value: str, path: str) -> None:
    if isinstance(fmt, dict):
        parse_property_string(fmt, value, path)
        return
    m = re.fullmatch(r"(.*?)(?:-(list|opt))?", fmt)
    assert m
    name, kind = m.group(1), m.group(2)
    fn = FORMATS.get(name)
    if fn is None:
        return  # a format the emulator does not model is accepted as is
    if kind == "list":
        for item in split_list(value):
            fn(item)
    elif kind == "opt":
        if value:
            fn(value)
    else:
        fn(value)


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
    _check_object(path, fmt, res, False, errors)
    if errors:
        text = "format error\n" + "".join(f"{k}: {v}\n" for k, v in errors.items())
        raise FormatError(text)
    return res


def print_property_string(data: dict[str, Any], fmt: dict[str, Any]) -> str:
    """PVE::JSONSchema::print_property_string: default key first, then required, then the
    rest, sorted; 'disk-size' values rendered with format_size."""
    default_key = next((k for k, s in fmt.items() if s.get("default_key")), None)
    done: set[str] = set()
    parts: list[str] = []

    def add(key: str, is_default: bool = False) -> None:
        if key in done or data.get(key) is None:
            return
        done.add(key)
        sub = fmt.get(key) or {}
        value = data[key]
        text = str(value)
        if sub.get("format") == "disk-size":
            # parsed drives keep sizes as written ("64M"); PVE prints them normalised
            size = parse_size(text)
            text = format_size(size) if size is not None else text
        parts.append(text if is_default else f"{key}={text}")

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


def _check_object(
    path: str,
    props: dict[str, dict[str, Any]] | Callable[[str], dict[str, Any] | None],
    value: dict[str, Any],
    additional: bool,
    errors: dict[str, str],
    names: Iterable[str] | None = None,
) -> None:
    lookup = props if callable(props) else props.get
    all_names = list(names) if names is not None else list(props)  # type: ignore[arg-type]
    for key in all_names:
        sub = lookup(key)
        if sub is not None:
            check_prop(value.get(key), sub, f"{path}.{key}" if path else key, errors)
    for key in value:
        sub = lookup(key)
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


def normalize(ms: MethodSchema, params: dict[str, Any]) -> dict[str, Any]:
    """RESTHandler's normalize_legacy_param_formats: arrays for '-list' strings are joined."""
    out = dict(params)
    for key, value in params.items():
        prop = ms.prop(key)
        if not prop or not value:
            continue
        fmt = prop.get("format")
        if isinstance(value, list) and prop.get("type") == "string":
            if isinstance(fmt, str) and fmt.endswith("-list"):
                out[key] = ",".join(scalar_text(v) for v in value)
        elif not isinstance(value, list) and prop.get("type") == "array":
            out[key] = [value]
    return out


def validate(ms: MethodSchema, params: dict[str, Any]) -> dict[str, str]:
    """Check `params` against the method's schema; 400 'Parameter verification failed.' with
    PVE's per-parameter messages on failure. Returns the parameters as Perl would see them
    (scalars as strings)."""
    params = normalize(ms, params)
    errors: dict[str, str] = {}
    names = [n for n in ms.properties if not n.endswith("[n]")]
    _check_object("", ms.prop, params, ms.additional_properties, errors, names)
    if errors:
        raise param_error(errors)
    return {k: scalar_text(v) for k, v in params.items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "extract":
        print("usage: python -m pvesim.schema extract APIDATA.json > schema_subset.json")
        return 2
    with open(args[1], encoding="utf-8") as fh:
        data = json.load(fh)
    json.dump(extract(data), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
