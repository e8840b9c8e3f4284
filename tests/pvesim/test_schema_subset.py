"""The API facts the emulator ships (pvesim/schema_subset.json) are PVE 9's own.

The product must run without ../shared, so the subset is committed; this test re-extracts it
from the ground truth, ../shared/pve-api/apidata-v9.json beside the clone, when that is
there. CI has it, so there a missing file is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pvesim import schema
from pvesim.api import load_handlers

REPO = Path(__file__).resolve().parents[2]
APIDATA = REPO.parent / "shared" / "pve-api" / "apidata-v9.json"
SUBSET = REPO / "pvesim" / "schema_subset.json"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def apidata() -> list[dict[str, object]]:
    if not APIDATA.is_file():
        reason = f"PVE API ground truth not found at {APIDATA}"
        if IN_CI:
            pytest.fail(f"CI=true requires it: {reason}")
        pytest.skip(reason)
    data: list[dict[str, object]] = json.loads(APIDATA.read_text(encoding="utf-8"))
    return data


def test_committed_subset_matches_apidata(apidata: list[dict[str, object]]) -> None:
    committed = json.loads(SUBSET.read_text(encoding="utf-8"))
    fresh = schema.extract(apidata)
    assert fresh.keys() == committed.keys()
    for key in sorted(fresh["endpoints"].keys() | committed["endpoints"].keys()):
        assert committed["endpoints"].get(key) == fresh["endpoints"].get(key), (
            f"{key} differs from {APIDATA.name}; regenerate with"
            f" `python -m pvesim.schema extract {APIDATA} > pvesim/schema_subset.json`"
        )
    assert committed == fresh


def test_extract_command_writes_the_committed_file(
    apidata: list[dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    # the documented regeneration command reproduces the file byte for byte (no churn in diffs)
    assert schema.main(["extract", str(APIDATA)]) == 0
    assert capsys.readouterr().out == SUBSET.read_text(encoding="utf-8")


def test_every_served_endpoint_has_schema_and_handler() -> None:
    served = {(path, method) for path, method in schema.SERVED}
    assert set(schema.load().methods) == served
    assert set(load_handlers()) == served
