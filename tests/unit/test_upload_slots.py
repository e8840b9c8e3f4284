"""Upload slots: a limit on all uploads and one per token, each named when it is hit."""

from __future__ import annotations

import pytest

from coordinator.upload_slots import UploadLimitReached, UploadSlots


def test_one_token_gets_its_share_and_another_token_still_gets_in() -> None:
    slots = UploadSlots(total=4, per_token=2)
    with slots.hold(1), slots.hold(1):
        with pytest.raises(UploadLimitReached) as refused:
            slots.check(1)
        assert refused.value.error == "too_many_uploads_for_token"
        assert refused.value.message == (
            "this token already has as many uploads running as it may "
            "(max_uploads_per_token = 2); retry later"
        )
        with slots.hold(2):
            pass
    with slots.hold(1), slots.hold(1):  # both were given back
        pass


def test_the_total_is_named_when_every_slot_is_taken() -> None:
    slots = UploadSlots(total=3, per_token=2)
    with slots.hold(1), slots.hold(2), slots.hold(3):
        with pytest.raises(UploadLimitReached) as refused, slots.hold(4):
            pass
        assert refused.value.error == "too_many_uploads"
        assert (
            refused.value.message == "every upload slot is in use (max_concurrent_uploads = 3); retry later"
        )


def test_a_slot_is_given_back_when_its_upload_fails() -> None:
    slots = UploadSlots(total=1, per_token=1)
    with pytest.raises(RuntimeError), slots.hold(1):
        raise RuntimeError("the agent went away")
    with slots.hold(1):
        pass
