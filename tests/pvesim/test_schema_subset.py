"""The API facts the emulator ships (pvesim/schema_subset.json) are PVE 9's own: re-extracted
from apidata-v9.json when it is there (tests/support/apidata.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pvesim import schema
from pvesim.api import load_handlers
from tests.support import apidata as ground_truth
from tests.support.apidata import APIDATA, REPO

SUBSET = REPO / "pvesim" / "schema_subset.json"


@pytest.fixture(scope="module")
def apidata() -> list[dict[str, Any]]:
    return ground_truth.load()


def test_committed_subset_matches_apidata(apidata: list[dict[str, Any]]) -> None:
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
    apidata: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    # the documented regeneration command reproduces the file byte for byte (no churn in diffs)
    assert schema.main(["extract", str(APIDATA)]) == 0
    assert capsys.readouterr().out == SUBSET.read_text(encoding="utf-8")


def test_every_served_endpoint_has_schema_and_handler() -> None:
    served = {(path, method) for path, method in schema.SERVED}
    assert set(schema.load().methods) == served
    assert set(load_handlers()) == served
