"""Every endpoint the emulator serves checks its parameters against PVE 9's schema (the facts
committed from apidata-v9.json) and answers a bad one as PVE does: 400 "Parameter
verification failed." with the offending parameter named in `errors`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.pvesim.conftest import NODES, Emulator

SUBSET = json.loads((Path(__file__).resolve().parents[2] / "pvesim" / "schema_subset.json").read_text())
ENDPOINTS: dict[str, dict[str, Any]] = SUBSET["endpoints"]
NOT_IN_SCHEMA = "property is not defined in schema and the schema does not allow additional properties"
PARAM_FAILED = "Parameter verification failed.\n"
UPID = "UPID:pve-node1:0001E240:00BC614E:6700A000:qmcreate:4242:root@pam:"
# valid values for path parameters and for the required body parameters
PATH_VALUES = {
    "node": NODES[0],
    "vmid": "4242",
    "storage": "local",
    "volume": "local:4242/vm-4242-disk-0.raw",
    "upid": UPID,
    "snapname": "snap1",
}
REQUIRED_VALUES = {"vmid": "4243", "newid": "4244", "snapname": "snap1"}
BAD_SCALARS = {"integer": "12x", "boolean": "maybe", "number": "1.2.3"}


def concrete(path: str, **override: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: override.get(m.group(1), PATH_VALUES[m.group(1)]), path)


def required_params(key: str) -> dict[str, str]:
    """The non-path parameters an endpoint cannot do without, with valid values."""
    method, path = key.split(" ", 1)
    in_path = set(re.findall(r"\{(\w+)\}", path))
    props = ENDPOINTS[key]["properties"]
    needed = [n for n, p in props.items() if not p.get("optional") and n not in in_path]
    return {n: REQUIRED_VALUES[n] for n in needed}


def call(emulator: Emulator, key: str, params: dict[str, str], **path_override: str) -> Any:
    method, path = key.split(" ", 1)
    return emulator.raw(method, concrete(path, **path_override), params)


def typed_cases() -> list[Any]:
    """(endpoint, parameter, value, expected error) for every typed or enumerated parameter."""
    cases = []
    for key, entry in sorted(ENDPOINTS.items()):
        for name, prop in sorted(entry["properties"].items()):
            if name.endswith("[n]") or prop.get("alias"):
                continue  # PVE skips the checks of aliases
            typ = prop.get("type")
            if typ in BAD_SCALARS:
                value = BAD_SCALARS[typ]
                expected = f"type check ('{typ}') failed - got '{value}'"
            elif prop.get("enum") and not prop.get("format"):
                value = "no-such-value"
                enum = ", ".join(prop["enum"])
                expected = f"value '{value}' does not have a value in the enumeration '{enum}'"
            else:
                continue
            errors = {name: expected}
            if isinstance(prop.get("requires"), str):
                errors[prop["requires"]] = f"missing property required by '{name}'"
            cases.append(pytest.param(key, name, value, errors, id=f"{key}:{name}"))
    return cases


@pytest.mark.parametrize("key", sorted(ENDPOINTS))
def test_unknown_parameter_is_refused(emulator: Emulator, key: str) -> None:
    resp = call(emulator, key, {**required_params(key), "foo": "1"})
    assert resp.status_code == 400, resp.text
    assert resp.reason == "Parameter verification failed."
    assert resp.json() == {"data": None, "errors": {"foo": NOT_IN_SCHEMA}, "message": PARAM_FAILED}


@pytest.mark.parametrize(("key", "name", "value", "errors"), typed_cases())
def test_ill_typed_parameter_is_refused(
    emulator: Emulator, key: str, name: str, value: str, errors: dict[str, str]
) -> None:
    path = key.split(" ", 1)[1]
    params = required_params(key)
    if f"{{{name}}}" in path:
        resp = call(emulator, key, params, **{name: value})
    else:
        resp = call(emulator, key, {**params, name: value})
    assert resp.status_code == 400, resp.text
    assert resp.json() == {"data": None, "errors": errors, "message": PARAM_FAILED}


def test_schema_has_typed_parameters_to_check() -> None:
    # the parametrisation above is not vacuous: the schema's typed parameters are there
    names = {case.values[1] for case in typed_cases()}
    assert {"vmid", "full", "purge", "type", "limit", "newid", "cores", "template"} <= names


def test_missing_required_parameter(emulator: Emulator) -> None:
    resp = emulator.raw("POST", f"/nodes/{NODES[0]}/qemu", {"cores": "2"})
    assert resp.status_code == 400
    assert resp.json()["errors"] == {"vmid": "property is missing and it is not optional"}


def test_format_and_range_checks(emulator: Emulator) -> None:
    # pve-vmid format, then minimum/maximum, as PVE's JSONSchema orders its checks
    resp = emulator.raw("GET", "/cluster/nextid", {"vmid": "99"})
    assert resp.status_code == 400
    assert resp.json()["errors"] == {"vmid": "invalid format - value does not look like a valid VM ID\n"}
    resp = emulator.raw("POST", f"/nodes/{NODES[0]}/qemu", {"vmid": "4245", "cores": "0"})
    assert resp.json()["errors"] == {"cores": "value must have a minimum value of 1"}
    resp = emulator.raw("GET", f"/nodes/{NODES[0]}/storage", {"content": "images,films"})
    assert resp.json()["errors"] == {"content": "invalid format - invalid content type 'films'\n"}


def test_drive_property_string_is_checked(emulator: Emulator) -> None:
    node = NODES[0]
    resp = emulator.raw("POST", f"/nodes/{node}/qemu", {"vmid": "4246", "scsi0": "local:1,bogus=1"})
    assert resp.status_code == 400
    assert resp.json()["errors"] == {
        "scsi0": "invalid format - invalid key in comma-separated list property: bogus\n"
    }
    cache = ENDPOINTS["POST /nodes/{node}/qemu"]["properties"]["scsi[n]"]["format"]["cache"]["enum"]
    resp = emulator.raw("POST", f"/nodes/{node}/qemu", {"vmid": "4246", "scsi0": "local:1,cache=fast"})
    assert resp.json()["errors"] == {
        "scsi0": "invalid format - format error\nscsi0.cache: value 'fast' does not have a value in the"
        f" enumeration '{', '.join(cache)}'\n"
    }


def test_indexed_parameters_beyond_their_range_are_unknown(emulator: Emulator) -> None:
    # scsi0..scsi30 exist (apidata: "n is 0 to 30"), scsi31 does not
    resp = emulator.raw("POST", f"/nodes/{NODES[0]}/qemu", {"vmid": "4247", "scsi31": "local:1"})
    assert resp.status_code == 400
    assert resp.json()["errors"] == {"scsi31": NOT_IN_SCHEMA}


def test_path_not_served_is_not_implemented(emulator: Emulator) -> None:
    resp = emulator.raw("GET", "/nodes/pve-node1/lxc")
    assert resp.status_code == 501
    assert resp.json()["message"] == "Method 'GET /nodes/pve-node1/lxc' not implemented"
