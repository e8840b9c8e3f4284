"""Form fields that carry JSON (sync_node_ids, vm_config) are decoded within the body's bounds."""

from __future__ import annotations

import pytest

from coordinator.api.upload import UploadForm
from shared.validation import InvalidInput, parse

FORM = {"template_name": "t", "cluster_id": "1", "storage_id": "1"}


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("sync_node_ids", "[" * 10000 + "]" * 10000),  # RecursionError: a 500
        ("vm_config", '{"a":' * 10000 + "1" + "}" * 10000),
        ("sync_node_ids", "[" + "9" * 5000 + "]"),
    ],
)
def test_hostile_json_in_a_form_field_is_named(field: str, text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(UploadForm, {**FORM, field: text})
    assert list(caught.value.fields) == [field]
