"""The status writes of coordinator/states against a migrated database: a write happens
only from a status its table allows (and, for a running sync task, in the attempt the
writer holds), answers whether it happened, and moves the instance that follows it. The
sync-task counts the triggers keep stay exact through every transition."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.db import sync_task_counts
from coordinator.db.models import (
    Clone,
    PveCluster,
    TemplateDeletion,
    TemplateInstance,
    TemplateSyncTask,
    TemplateUpload,
    VmTemplate,
)
from coordinator.jobs.engine import OWNER
from coordinator.states import clone, deletion, instance, sync_task, template, upload
from coordinator.states.instance import InstanceStatus
from coordinator.states.sync_task import SyncTaskStatus
from coordinator.states.upload import UploadStatus
from coordinator.states.writes import move
from tests.support.db import task_row

NAMES = itertools.count(1)


@pytest.fixture
async def session(db: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with db() as s:
        yield s


async def _template(session: AsyncSession) -> VmTemplate:
    n = next(NAMES)
    cluster = PveCluster(cluster_name=f"c{n}", api_url="https://pve", token_id="t", token_secret="s")
    session.add(cluster)
    await session.flush()
    row = template.new_template(f"t{n}", cluster_id=cluster.id)
    session.add(row)
    await session.flush()
    return row


async def _upload(session: AsyncSession, tpl: VmTemplate, **fields: Any) -> TemplateUpload:
    row = upload.new_upload(
        "me",
        60,
        template_id=tpl.id,
        template_name=tpl.template_name,
        cluster_id=tpl.cluster_id,
        storage_id=1,
        storage_name="local",
        storage_type="dir",
        import_node_id=1,
        import_node_name="n1",
        file_name="x.qcow2",
        **fields,
    )
    session.add(row)
    await session.flush()
    return row


async def _task(session: AsyncSession, node: int = 2) -> tuple[TemplateSyncTask, TemplateInstance]:
    tpl = await _template(session)
    up = await _upload(session, tpl)
    task = task_row(up, node)
    session.add(task)
    await session.flush()
    inst = instance.new_instance(
        InstanceStatus.PENDING,
        template_id=tpl.id,
        upload_id=up.id,
        cluster_id=tpl.cluster_id,
        node_id=node,
        node_name=f"n{node}",
        storage_id=1,
        storage_name="local",
        sync_task_id=task.id,
    )
    session.add(inst)
    await session.commit()
    return task, inst


async def _now(session: AsyncSession, row: Any) -> Any:
    return await session.get(type(row), row.id, populate_existing=True)


async def _claimed(session: AsyncSession) -> tuple[TemplateSyncTask, TemplateInstance]:
    task, inst = await _task(session)
    assert await sync_task.claim(session, task.id, 1, "n1", "n1")
    await session.commit()
    return await _now(session, task), inst


async def test_a_claim_starts_a_new_attempt_once(session: AsyncSession) -> None:
    task, inst = await _task(session)
    assert await sync_task.claim(session, task.id, 1, "n1", "n1")
    assert not await sync_task.claim(session, task.id, 1, "n1", "n1")  # syncing already
    await session.commit()
    task = await _now(session, task)
    assert (task.status, task.epoch, task.attempts, task.active_key) == ("syncing", 1, 1, 2)
    assert (await _now(session, inst)).status == "syncing"


async def test_a_running_task_moves_only_in_the_attempt_the_writer_holds(session: AsyncSession) -> None:
    task, inst = await _claimed(session)
    stale = task.epoch - 1
    assert not await sync_task.copied(session, task.id, stale, "copy", 90)
    assert not await sync_task.requeue(session, task.id, stale, task.created_at, "x")
    assert not await sync_task.unclaim(session, task.id, stale, task.created_at)
    assert not await sync_task.fail(session, task, "x", epoch=stale)
    assert not await sync_task.record_progress(session, task.id, SyncTaskStatus.SYNCING, stale, bytes_done=5)
    assert await sync_task.record_progress(session, task.id, SyncTaskStatus.SYNCING, task.epoch, bytes_done=5)
    assert await sync_task.copied(session, task.id, task.epoch, "copy", 90)
    assert not await sync_task.completed(session, task.id, stale, 9001, "vol")  # (issue 12: unchecked before)
    assert await sync_task.completed(session, task.id, task.epoch, 9001, "vol")
    await session.commit()
    task, inst = await _now(session, task), await _now(session, inst)
    assert (task.status, task.progress, task.vmid, task.active_key) == ("completed", 100, 9001, None)
    assert (inst.status, inst.vmid, inst.volume_id) == ("available", 9001, "vol")


async def test_a_failed_attempt_waits_and_an_unstarted_one_is_not_counted(session: AsyncSession) -> None:
    task, inst = await _claimed(session)
    assert await sync_task.unclaim(session, task.id, task.epoch, task.created_at)
    await session.commit()
    assert ((await _now(session, task)).status, (await _now(session, task)).attempts) == ("pending", 0)
    assert (await _now(session, inst)).status == "pending"
    task, _ = await _claimed_again(session, task)
    assert await sync_task.requeue(session, task.id, task.epoch, task.created_at, "attempt 1 failed")
    await session.commit()
    task = await _now(session, task)
    assert (task.status, task.attempts, task.error_message) == ("pending", 1, "attempt 1 failed")


async def _claimed_again(session: AsyncSession, task: TemplateSyncTask) -> tuple[TemplateSyncTask, None]:
    assert await sync_task.claim(session, task.id, 1, "n1", "n1")
    await session.commit()
    return await _now(session, task), None


async def test_a_pending_task_fails_without_an_epoch_a_running_one_only_with_its_own(
    session: AsyncSession,
) -> None:
    task, inst = await _task(session)
    assert await sync_task.fail(session, task, "no copy left", epoch=None)
    await session.commit()
    task = await _now(session, task)
    assert (task.status, task.active_key, task.error_message) == ("failed", None, "no copy left")
    assert (await _now(session, inst)).status == "failed"
    running, _ = await _claimed(session)
    assert not await sync_task.fail(session, running, "x", epoch=None)  # running: only its attempt may


async def test_a_retry_takes_a_failed_task_back_unless_another_is_active(session: AsyncSession) -> None:
    task, inst = await _task(session)
    assert not await sync_task.retry(session, task.id)  # pending, not failed
    assert await sync_task.fail(session, task, "x", epoch=None)
    await session.commit()
    assert await sync_task.retry(session, task.id)
    await session.commit()
    task = await _now(session, task)
    assert (task.status, task.active_key, task.error_message) == ("pending", 2, None)
    assert (await _now(session, inst)).status == "pending"
    # Another active task to the same node meanwhile: the unique active_key refuses the retry.
    assert await sync_task.fail(session, task, "x", epoch=None)
    other = sync_task.new_task(
        **{c: getattr(task, c) for c in ("template_id", "upload_id", "cluster_id", "source_node_id")},
        source_node_name="n1",
        target_node_id=2,
        target_node_name="n2",
        storage_name="local",
    )
    session.add(other)
    await session.commit()
    with pytest.raises(IntegrityError):
        await sync_task.retry(session, task.id)
    await session.rollback()


async def test_cancel_takes_pending_and_syncing_tasks_only(session: AsyncSession) -> None:
    pending, _ = await _task(session)
    assert await sync_task.cancel(session, pending.id, "canceled by me")
    syncing, _ = await _claimed(session)
    assert await sync_task.cancel(session, syncing.id, "canceled by me")
    await session.commit()
    for task in (pending, syncing):
        task = await _now(session, task)
        assert (task.status, task.active_key, task.error_message) == ("canceled", None, "canceled by me")
        # Canceled is an end, as final as failed: the API shows when it ended.
        assert task.sync_end_time is not None and task.next_attempt_at is None
        assert not await sync_task.cancel(session, task.id, "again")
    assert [sync_task.cancelable(s) for s in SyncTaskStatus] == [True, True, False, False, False, False]


async def test_a_retry_takes_a_canceled_task_back_with_its_verified_bytes(session: AsyncSession) -> None:
    """A cancel keeps the verified bytes for a later retry (api-contract 6.6), so a retry
    takes a canceled task back as it takes a failed one; a completed task stays completed."""
    task, _ = await _claimed(session)
    await session.execute(update(TemplateSyncTask).where(TemplateSyncTask.id == task.id).values(bytes_done=7))
    assert await sync_task.cancel(session, task.id, "canceled by me")
    await session.commit()
    assert await sync_task.retry(session, task.id)
    await session.commit()
    task = await _now(session, task)
    assert (task.status, task.active_key, task.error_message) == ("pending", task.target_node_id, None)
    assert (task.bytes_done, task.sync_end_time) == (7, None)  # the count of what the target holds
    assert not await sync_task.retry(session, task.id)  # pending now


async def test_the_template_delete_cancels_only_its_pending_tasks(session: AsyncSession) -> None:
    pending, _ = await _task(session)
    assert await sync_task.cancel_pending_of_template(session, pending.template_id) == 1
    assert await sync_task.cancel_pending_of_template(session, pending.template_id) == 0
    await session.commit()
    canceled = await _now(session, pending)
    assert (canceled.error_message, canceled.sync_end_time is not None) == ("template deleted", True)


async def test_counters_never_change_a_status_and_writes_refuse_unlisted_sources(
    session: AsyncSession,
) -> None:
    task, _ = await _task(session)
    status_too: dict[str, Any] = {"status": "completed"}
    with pytest.raises(TypeError):  # a counter write has no way to change the status
        await sync_task.record_progress(session, task.id, SyncTaskStatus.PENDING, 0, **status_too)
    with pytest.raises(ValueError):  # completed -> pending is no transition
        await move(
            session,
            TemplateSyncTask,
            sync_task.TRANSITIONS,
            SyncTaskStatus.PENDING,
            [TemplateSyncTask.id == task.id],
            from_=(SyncTaskStatus.COMPLETED,),
        )


async def test_the_counts_the_triggers_keep_follow_every_transition(session: AsyncSession) -> None:
    task, _ = await _claimed(session)
    assert await sync_task.copied(session, task.id, task.epoch, "copy", 90)
    assert await sync_task.requeue(session, task.id, task.epoch, task.created_at, "x")
    await session.commit()
    counted = {s: await sync_task_counts.total(session, task.template_id, s) for s in SyncTaskStatus}
    assert counted == {s: int(s == "pending") for s in SyncTaskStatus}


async def test_an_upload_goes_its_way_and_no_other(session: AsyncSession) -> None:
    tpl = await _template(session)
    up = await _upload(session, tpl)
    await session.commit()
    assert (up.status, up.lease_owner) == ("uploading", "me")
    assert not await upload.start_import(session, up.id)
    assert not await upload.imported(session, up.id, 9000)
    assert await upload.stored(session, up.id, staged_name="s", size=3, sha256="ab", virtual_size=4)
    assert not await upload.abandon(session, up.id, "too late: stored")
    assert await upload.start_import(session, up.id)
    assert await upload.imported(session, up.id, 9000)
    assert not await upload.fail_import(session, up.id, "too late: imported")
    await session.commit()
    up = await _now(session, up)
    assert (up.status, up.vmid, up.import_progress, up.lease_owner) == ("imported", 9000, 100, None)


async def test_an_abandoned_upload_lets_go_of_its_template(session: AsyncSession) -> None:
    up = await _upload(session, await _template(session))
    assert await upload.abandon(session, up.id, "broke off")
    assert not await upload.abandon(session, up.id, "twice")
    await session.commit()
    up = await _now(session, up)
    assert (up.status, up.template_id, up.error_message, up.lease_owner) == (
        "failed",
        None,
        "broke off",
        None,
    )


async def test_a_template_delete_fails_its_queued_and_running_imports(session: AsyncSession) -> None:
    tpl = await _template(session)
    queued, uploading = await _upload(session, tpl), await _upload(session, tpl, version=2)
    assert await upload.stored(session, queued.id, staged_name="s", size=1, sha256="a", virtual_size=1)
    assert await upload.stop_imports_of_template(session, tpl.id, "template deleted") == 1
    await session.commit()
    assert (await _now(session, queued)).status == UploadStatus.FAILED
    assert (await _now(session, uploading)).status == UploadStatus.UPLOADING


async def test_instances_follow_their_import(session: AsyncSession) -> None:
    task, inst = await _task(session)  # a pending (sync) instance of the same upload
    made = instance.new_instance(
        InstanceStatus.IMPORTING,
        **{
            c: getattr(inst, c)
            for c in ("template_id", "upload_id", "cluster_id", "storage_id", "storage_name")
        },
        node_id=1,
        node_name="n1",
    )
    session.add(made)
    await session.flush()
    assert await instance.follow_import(session, inst.upload_id, InstanceStatus.AVAILABLE, vmid=9000) == 1
    await session.commit()
    assert ((await _now(session, made)).status, (await _now(session, inst)).status) == (
        "available",
        "pending",
    )
    assert await instance.mark_deleted(session, [made.id, inst.id]) == 2
    with pytest.raises(ValueError):
        instance.new_instance(InstanceStatus.AVAILABLE)


async def test_a_template_is_deleted_softly_or_through_deleting(session: AsyncSession) -> None:
    soft, cascaded = await _template(session), await _template(session)
    await session.commit()
    assert await template.soft_delete(session, soft.id, "me")
    assert not await template.soft_delete(session, soft.id, "me")
    assert await template.start_deleting(session, cascaded.id, "me")
    assert not await template.start_deleting(session, cascaded.id, "me")  # one request starts it
    assert not await template.soft_delete(session, cascaded.id, "me")
    assert await template.start_deleting(session, soft.id, "me")  # what the soft delete left
    assert await template.deleted(session, cascaded.id)
    await session.commit()
    cascaded = await _now(session, cascaded)
    assert (cascaded.status, cascaded.name_key) == ("deleted", None) and cascaded.deleted_at is not None


async def test_a_deletion_runs_ends_and_runs_again(session: AsyncSession) -> None:
    tpl = await _template(session)
    first = await deletion.start(session, tpl.id, "me", 60)
    assert not await deletion.restart_failed(session, first, "me", 60)  # running, not failed
    assert await deletion.give_up(session, first, "kept raising")
    assert await deletion.restart_failed(session, first, "you", 60)
    assert await deletion.done(session, first)
    assert not await deletion.give_up(session, first, "too late")
    assert await deletion.start(session, tpl.id, "me", 60) == first  # the row is reused
    assert await deletion.give_up(session, first, "kept raising")
    assert await deletion.start(session, tpl.id, "me", 60) == first  # after a give-up too
    await session.commit()
    row = await session.scalar(select(TemplateDeletion).where(TemplateDeletion.id == first))
    assert row is not None and (row.status, row.finished_at, row.reason) == ("running", None, None)


async def _clone(
    session: AsyncSession, *, waits: bool = False, vmid: int | None = None, cluster_id: int | None = None
) -> Clone:
    tpl = await _template(session)
    row = clone.new_clone(
        waits_for_sync=waits,
        template_id=tpl.id,
        upload_id=1,
        cluster_id=cluster_id or tpl.cluster_id,
        node_id=1,
        node_name="n1",
        source_node_id=1,
        source_node_name="n1",
        storage_name="local",
        name="web-1",
        vmid=vmid,
        lease_owner=OWNER,  # as the job runner's claim leaves it
    )
    session.add(row)
    await session.commit()
    return row


async def test_a_clone_is_pending_or_waits_for_its_sync_and_starts_only_with_a_vmid(
    session: AsyncSession,
) -> None:
    row = await _clone(session)
    assert row.status == "pending" and row.vmid_key is None
    assert not await clone.start(session, row.id)  # no VMID held yet
    assert await clone.hold_vmid(session, row.id, 100)
    assert await clone.start(session, row.id)
    await session.commit()
    assert (await _now(session, row)).status == "cloning"
    waiting = await _clone(session, waits=True)
    assert waiting.status == "waiting_for_sync"
    assert await clone.hold_vmid(session, waiting.id, 101) and await clone.start(session, waiting.id)
    await session.commit()


async def test_two_clones_in_flight_never_hold_one_vmid_and_an_ended_one_lets_it_go(
    session: AsyncSession,
) -> None:
    first = await _clone(session, vmid=500)
    elsewhere = await _clone(session, vmid=500)  # another cluster: its VMIDs are its own
    second = await _clone(session, cluster_id=first.cluster_id)
    assert first.vmid_key == elsewhere.vmid_key == 500
    first_id, second_id = first.id, second.id
    with pytest.raises(IntegrityError):
        await clone.hold_vmid(session, second_id, 500)
    await session.rollback()
    assert await clone.start(session, first_id)
    assert await clone.completed(session, first_id, linked=True)
    await session.commit()
    done = await session.get(Clone, first_id, populate_existing=True)
    assert done is not None
    assert (done.status, done.vmid, done.vmid_key, done.progress) == ("completed", 500, None, 100)
    assert done.finished_at is not None and done.linked
    assert await clone.hold_vmid(session, second_id, 500)  # free again: the VM is PVE's to list now
    await session.commit()


async def test_only_the_lease_holder_moves_a_clone_but_the_engine_fails_it_without(
    session: AsyncSession,
) -> None:
    row = await _clone(session, vmid=600)
    await session.execute(update(Clone).where(Clone.id == row.id).values(lease_owner="another-replica"))
    await session.commit()
    assert not await clone.start(session, row.id)
    assert not await clone.record(session, row.id, clone.CloneStatus.PENDING, progress=5)
    assert not await clone.fail(session, row.id, "x")
    assert await clone.fail(session, row.id, "gave up", leased=False)
    await session.commit()
    failed = await _now(session, row)
    assert (failed.status, failed.error_message, failed.vmid_key) == ("failed", "gave up", None)
    assert not await clone.fail(session, row.id, "again", leased=False)  # final
    assert not await clone.completed(session, row.id, linked=False)
