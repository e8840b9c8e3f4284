"""Stacks shared by more than one module of tests/coordinator."""

from __future__ import annotations

import pytest

from demo.stack import Stack
from tests.conftest import own_stack

NO_SWEEP = 3600.0  # the journal tests leave cut-off VMs for a cascade delete or a retry to find


@pytest.fixture(scope="session", params=["sqlite"])
def journal_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """A stack whose VM sweep does not run: for the half-made-VM tests (test_half_made_vms.py),
    and the PVE-outage tests (test_pve_outage.py), which need no settings of their own and
    hurt PVE, so they stay off the shared ``stack`` without paying for a stack (~10 s) more."""
    return own_stack(
        request, tmp_path_factory, "journal", coordinator_settings={"vm_sweep_interval": NO_SWEEP}
    )
