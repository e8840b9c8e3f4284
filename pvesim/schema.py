"""The API schema subset the emulator serves: routing and parameter validation.

`python -m pvesim.schema extract APIDATA.json > pvesim/schema_subset.json` regenerates the
committed subset from PVE's own API description (pve-docs apidata). Only facts are kept
(names, types, enums, patterns, formats, bounds, defaults), never descriptions.

The checks themselves are PVE::JSONSchema's, in shared.pve_schema (the product uses them too).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from importlib import resources
from typing import Any

from pvesim.errors import ApiError, param_error
from shared.pve_schema import (
    check_object,
    extract_command,
    indexed_prop,
    method_properties,
    property_facts,
    scalar_text,
    walk,
)

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
    ("/nodes/{node}/qemu/{vmid}/config", "PUT"),
    ("/nodes/{node}/qemu/{vmid}/status/current", "GET"),
    ("/nodes/{node}/qemu/{vmid}/status/start", "POST"),
    ("/nodes/{node}/qemu/{vmid}/status/stop", "POST"),
    ("/nodes/{node}/qemu/{vmid}/snapshot", "GET"),
    ("/nodes/{node}/qemu/{vmid}/snapshot", "POST"),
    ("/nodes/{node}/qemu/{vmid}/snapshot/{snapname}", "DELETE"),
    ("/nodes/{node}/qemu/{vmid}/template", "POST"),
    ("/nodes/{node}/qemu/{vmid}/clone", "POST"),
    ("/nodes/{node}/tasks", "GET"),
    ("/nodes/{node}/tasks/{upid}", "GET"),
    ("/nodes/{node}/tasks/{upid}", "DELETE"),
    ("/nodes/{node}/tasks/{upid}/status", "GET"),
    ("/nodes/{node}/tasks/{upid}/log", "GET"),
)


# ---------------------------------------------------------------------------------------------
# extraction


def extract(apidata: list[dict[str, Any]]) -> dict[str, Any]:
    """The subset of `apidata` for the SERVED (path, method) pairs."""
    by_path = {node["path"]: node for node in walk(apidata)}
    endpoints: dict[str, Any] = {}
    for path, method in SERVED:
        info = by_path[path]["info"][method]
        params = info.get("parameters") or {}
        props = {
            name: property_facts(name, prop)
            for name, prop in sorted(method_properties(apidata, path, method).items())
        }
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

    def prop(self, name: str) -> dict[str, Any] | None:
        """Schema of `name`, expanding "scsi[n]" style entries to scsi0..scsiN."""
        return indexed_prop(self.properties, name)

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
    check_object("", ms.prop, params, ms.additional_properties, errors, names)
    if errors:
        raise param_error(errors)
    return {k: scalar_text(v) for k, v in params.items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    usage = "python -m pvesim.schema extract APIDATA.json > schema_subset.json"
    return extract_command(sys.argv[1:] if argv is None else argv, extract, usage)


if __name__ == "__main__":
    sys.exit(main())
