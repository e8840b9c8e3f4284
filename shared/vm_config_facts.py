"""PVE 9's schema facts of the VM options vm_config may set (shared/vm_config_facts.json).

`python -m shared.vm_config_facts extract APIDATA.json > shared/vm_config_facts.json`
regenerates the committed file from PVE's own API description (pve-docs apidata): the
parameters of POST /nodes/{node}/qemu that shared.vm_config_policy allows, facts only
(types, enums, patterns, formats, bounds, defaults). The product reads the committed file;
it never needs apidata.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from importlib import resources
from typing import Any

from shared.pve_schema import extract_command, method_properties, property_facts
from shared.vm_config_policy import ALLOWED

SOURCE = ("/nodes/{node}/qemu", "POST")
FILE = "vm_config_facts.json"


def extract(apidata: list[dict[str, Any]]) -> dict[str, Any]:
    props = method_properties(apidata, *SOURCE)
    return {
        "generator": f"python -m shared.vm_config_facts extract apidata-v9.json > shared/{FILE}",
        "source": f"{SOURCE[1]} {SOURCE[0]}",
        "properties": {name: property_facts(name, props[name]) for name in sorted(ALLOWED)},
    }


@cache
def load() -> dict[str, dict[str, Any]]:
    """The committed facts, by option name ("net[n]" for net0..net31)."""
    data = json.loads(resources.files("shared").joinpath(FILE).read_text("utf-8"))
    properties: dict[str, dict[str, Any]] = data["properties"]
    return properties


def main(argv: list[str] | None = None) -> int:
    usage = f"python -m shared.vm_config_facts extract APIDATA.json > shared/{FILE}"
    return extract_command(sys.argv[1:] if argv is None else argv, extract, usage)


if __name__ == "__main__":
    sys.exit(main())
