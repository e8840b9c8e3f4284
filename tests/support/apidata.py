"""PVE 9's API description (apidata-v9.json), the ground truth the committed facts come from.

The product must run without ../shared, so the facts are committed; tests re-extract them
from ../shared/pve-api/apidata-v9.json beside the clone when it is there. CI has it, so
there a missing file is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
APIDATA = REPO.parent / "shared" / "pve-api" / "apidata-v9.json"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def load() -> list[dict[str, Any]]:
    """apidata, or the test is skipped (failed under CI=true) with the reason."""
    if not APIDATA.is_file():
        reason = f"PVE API ground truth not found at {APIDATA}"
        if IN_CI:
            pytest.fail(f"CI=true requires it: {reason}")
        pytest.skip(reason)
    data: list[dict[str, Any]] = json.loads(APIDATA.read_text(encoding="utf-8"))
    return data
