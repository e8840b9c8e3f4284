"""What `pvesphere ... --wait` makes of the states it is sent, and how it writes them
when stdout is not a terminal."""

from __future__ import annotations

import io

from client import text
from client.answers import ApiFailure, unwrap
from client.progress import PlainBoard, PlainByteBar
from client.work import Item, Work


def _work() -> Work:
    return Work([Item("upload", 7, "pve-node1 import"), Item("sync_task", 3, "pve-node2 sync #3")])


def test_a_final_state_is_kept_against_a_late_event() -> None:
    work = _work()
    assert work.apply({"kind": "sync_task", "id": 3, "status": "completed", "progress": 100}) is not None
    assert work.apply({"kind": "sync_task", "id": 3, "status": "syncing", "progress": 40}) is None
    assert work.items[("sync_task", 3)].status == "completed"


def test_a_state_behind_the_one_held_is_stale() -> None:
    work = _work()
    assert work.apply({"kind": "upload", "id": 7, "status": "importing", "progress": 30}) is not None
    assert work.apply({"kind": "upload", "id": 7, "status": "uploaded", "bytes_done": 5}) is None
    assert work.apply({"kind": "upload", "id": 7, "status": "importing", "progress": 20}) is None
    assert work.apply({"kind": "upload", "id": 7, "status": "importing", "progress": 60}) is not None
    assert work.items[("upload", 7)].progress == 60


def test_other_objects_and_repeats_change_nothing() -> None:
    work = _work()
    assert work.apply({"kind": "sync_task", "id": 4, "status": "failed"}) is None  # not ours
    assert work.apply({"kind": "clone", "id": 3, "status": "failed"}) is None  # same id, other kind
    assert work.apply({"kind": "upload", "id": 7, "status": "importing", "progress": 10}) is not None
    assert work.apply({"kind": "upload", "id": 7, "status": "importing", "progress": 10}) is None
    assert work.apply({"bogus": True}) is None


def test_done_when_all_ended_and_doomed_when_the_import_failed() -> None:
    work = _work()
    work.apply({"kind": "upload", "id": 7, "status": "imported"})
    assert not work.done
    work.apply({"kind": "sync_task", "id": 3, "status": "completed", "rate_bytes_per_sec": 5})
    assert work.done and work.succeeded and work.failed == [] and not work.doomed

    work = _work()
    work.apply({"kind": "upload", "id": 7, "status": "failed", "error_message": "PVE said no"})
    assert work.doomed and not work.done and not work.succeeded  # its sync task: failed soon
    assert [i.error for i in work.failed] == ["PVE said no"]


def test_plain_progress_is_lines_at_each_change_without_escapes() -> None:
    out = io.StringIO()
    bar = PlainByteBar("upload a.qcow2", 4 << 20, out)
    for _ in range(16):
        bar.advance(256 << 10)
    lines = out.getvalue().splitlines()
    assert [line.split(":")[1].split()[0] for line in lines] == ["25%", "50%", "75%", "100%"]
    assert lines[-1].startswith("upload a.qcow2: 100% 4.0 MiB of 4.0 MiB, ")

    out = io.StringIO()
    work = _work()
    board = PlainBoard(list(work.items.values()), out)
    for state in (
        {
            "kind": "sync_task",
            "id": 3,
            "status": "syncing",
            "progress": 10,
            "bytes_done": 1 << 20,
            "bytes_total": 8 << 20,
        },
        {"kind": "sync_task", "id": 3, "status": "syncing", "progress": 20},  # same quarter: no line
        {"kind": "sync_task", "id": 3, "status": "syncing", "progress": 60},
        {"kind": "sync_task", "id": 3, "status": "failed", "error_message": "disk full"},
    ):
        item = work.apply(state)
        assert item is not None
        board.show(item)
    assert out.getvalue().splitlines() == [
        "pve-node1 import: 0% pending",
        "pve-node2 sync #3: 0% pending",
        "pve-node2 sync #3: 10% syncing 1.0 MiB of 8.0 MiB",
        "pve-node2 sync #3: 60% syncing 1.0 MiB of 8.0 MiB",
        "pve-node2 sync #3: 60% failed: disk full",
    ]
    assert "\x1b" not in out.getvalue()


def test_api_errors_are_worded_as_the_api_words_them() -> None:
    body = '{"code": 404, "message": "template 7 not found", "data": {"error": "template_not_found"}}'
    try:
        unwrap(404, "Not Found", body)
    except ApiFailure as exc:
        assert str(exc) == "template 7 not found (template_not_found, HTTP 404)"
    else:
        raise AssertionError("no error")
    assert unwrap(200, "OK", '{"code": 200, "message": "success", "data": {"id": 1}}') == {"id": 1}
    try:
        unwrap(502, "Bad Gateway", "<html>proxy error</html>")
    except ApiFailure as exc:
        assert str(exc) == "Bad Gateway: not an answer of the API: <html>proxy error</html> (HTTP 502)"
    else:
        raise AssertionError("no error")


def test_tables_line_up_and_sizes_read_well() -> None:
    rows = [{"id": 1, "name": "debian-12", "shared": True}, {"id": 10, "name": "x", "shared": None}]
    assert text.table(
        rows, [("ID", lambda r: r["id"]), ("NAME", lambda r: r["name"]), ("SHARED", lambda r: r["shared"])]
    ) == [
        "ID  NAME       SHARED",
        "1   debian-12  yes",
        "10  x          -",
    ]
    assert [text.size(n) for n in (0, 1023, 1536, 5 << 30)] == ["0 B", "1023 B", "1.5 KiB", "5.0 GiB"]
    assert [text.duration(s) for s in (None, 5, 75, 7300)] == ["-", "5s", "1m15s", "2h01m"]
