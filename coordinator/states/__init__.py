"""Where each entity's status changes: one module per entity with states.

Each module holds the entity's statuses (a StrEnum: its values are the strings stored in
the ``status`` column and shown by the API), its transition table (which status may
become which; pure, unit-tested in tests/unit/test_states.py) and the functions that
write a status: a conditional UPDATE (the row is still in a status the table lets go
to the new one, and, for a job row worked under a lease, still in the attempt the worker
holds: its ``epoch``) that answers whether it happened. Nothing else in the coordinator
writes a ``status`` column (tests/unit/test_status_writes.py checks the source).

    upload.py      template_upload: uploading -> uploaded -> importing -> imported, or failed
    instance.py    template_instance: follows its upload's import or its sync task
    sync_task.py   template_sync_task: pending -> syncing -> importing -> completed, ...
    template.py    vm_template: active -> deleting -> deleted
    deletion.py    template_deletion (a cascade delete's job): running -> done, or failed
    node.py        pve_node: what PVE says of a node, or removed
"""
