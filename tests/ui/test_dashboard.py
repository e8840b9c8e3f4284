"""The web dashboard at /ui/, in a real headless Chromium against a real stack (emulator,
three agents, coordinator): what an administrator sees and does in the page.

One stack and one browser for the module. The agents send at SEND_RATE, so a sync of the
seeded template takes seconds: long enough for its bar to be seen moving.
Set PVESPHERE_SCREENSHOTS=docs/screenshots to save the README's pictures while it runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demo.stack import Stack
from tests.conftest import IN_CI, own_stack
from tests.support.api import Api
from tests.support.browser import chromium_paths, console_errors, headless_chromium, wait_until
from tests.support.images import qcow2, raw_with_data
from tests.support.uploads import emulator, node_ids, storage_id, upload, wait_import

SEND_RATE = 12 << 20  # bytes/s per agent: the seeded 64 MiB take ~5 s to cross
UPLOAD_RATE = 24 << 20  # bytes/s of all uploads: the page's 24 MiB take a second to send
SYNC_MIB = 64
SHOTS = os.environ.get("PVESPHERE_SCREENSHOTS", "")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium() -> tuple[str, str]:
    found = chromium_paths()
    if isinstance(found, str):
        if IN_CI:
            pytest.fail(f"CI=true requires the dashboard's browser tests: {found}")
        pytest.skip(found)
    return found


@pytest.fixture(scope="module")
def ui_stack(
    chromium: tuple[str, str], request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Stack:
    return own_stack(
        request,
        tmp_path_factory,
        "ui",
        "sqlite",
        agent_settings={"max_send_rate": SEND_RATE},
        coordinator_settings={"max_upload_rate": UPLOAD_RATE},
    )


@pytest.fixture(scope="module")
def ui_api(ui_stack: Stack) -> Api:
    return Api(ui_stack.api, ui_stack.admin_token)


@pytest.fixture(scope="module")
def seeded(ui_stack: Stack, ui_api: Api, tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """A template on pve-node1's local storage (to sync from the page) and one on shared Ceph."""
    tmp = tmp_path_factory.mktemp("ui-images")
    made = {}
    for name, image, storage in (
        ("debian-12-local", raw_with_data(tmp / "local.raw", SYNC_MIB, SYNC_MIB), ("local", "pve-node1")),
        ("alma-9-ceph", qcow2(tmp / "shared.qcow2", 32, 4), ("ceph-storage", None)),
    ):
        reply = upload(ui_api, ui_stack, image, name, storage_id(ui_api, ui_stack, *storage))
        made[name] = int(reply.ok()["template_id"])
        image.unlink()
    for template_id in made.values():
        assert wait_import(ui_api, template_id)["upload_info"]["status"] == "imported"
    return made


@pytest.fixture(scope="module")
def small_local(ui_stack: Stack, ui_api: Api, tmp_path_factory: pytest.TempPathFactory) -> int:
    """A small template on pve-node1's local storage, nowhere else yet."""
    image = qcow2(tmp_path_factory.mktemp("ui-small") / "rocky.qcow2", 32, 2, seed=9)
    reply = upload(
        ui_api, ui_stack, image, "rocky-9-local", storage_id(ui_api, ui_stack, "local", "pve-node1")
    )
    template_id = int(reply.ok()["template_id"])
    image.unlink()
    assert wait_import(ui_api, template_id)["upload_info"]["status"] == "imported"
    return template_id


@pytest.fixture(scope="module")
def browser(chromium: tuple[str, str]) -> Iterator[Any]:
    with headless_chromium(*chromium) as driver:
        yield driver


def find(driver: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def find_all(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def log_in(driver: Any, stack: Stack) -> None:
    driver.get(f"{stack.coordinator_url}/ui/?token={stack.admin_token}")
    wait_until(driver, lambda d: find_all(d, "#matrix tbody tr"), what="the matrix")


def read(driver: Any, css: str, attribute: str = "") -> str | None:
    """An attribute (or, without one, the text) of the element ``css`` finds, read in one step:
    the page re-renders its tables on every event, so a found element may be gone a moment later."""
    return driver.execute_script(  # type: ignore[no-any-return]
        "const e = document.querySelector(arguments[0]);"
        "return e === null ? null : arguments[1] ? e.getAttribute(arguments[1]) : e.innerText",
        css,
        attribute,
    )


def cell_status(driver: Any, template_id: int, node_id: int) -> str | None:
    return read(
        driver, f'#matrix td.cell[data-template="{template_id}"][data-node="{node_id}"]', "data-status"
    )


def cell_text(driver: Any, template_id: int, node_id: int) -> str:
    return read(driver, f'#matrix td.cell[data-template="{template_id}"][data-node="{node_id}"]') or ""


def shot(driver: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / name))


def test_a_login_link_leaves_the_address_bar_and_the_page_shows_every_template_on_every_node(
    browser: Any, ui_stack: Stack, ui_api: Api, seeded: dict[str, int]
) -> None:
    stack, driver = ui_stack, browser
    # A wrong token: the login form, with the API's own words, and the token gone from the address.
    driver.get(f"{stack.coordinator_url}/ui/?token=not-a-token&x=1")
    assert driver.current_url == f"{stack.coordinator_url}/ui/?x=1"
    wait_until(driver, lambda d: find(d, "#login-error").text, what="the login error")
    assert find(driver, "#login-error").text == "invalid or revoked API token"
    assert find(driver, "#login").is_displayed() and not find(driver, "#board").is_displayed()

    log_in(driver, stack)
    assert driver.current_url == f"{stack.coordinator_url}/ui/"
    assert stack.admin_token not in driver.execute_script("return location.href + document.referrer")
    assert driver.execute_script("return sessionStorage.getItem('pvesphere.token')") == stack.admin_token
    # The token never reached a log: the coordinator keeps no access log, and the page's
    # requests carried no Referer.
    logs = "".join(p.read_text(errors="replace") for p in (stack.base / "logs").glob("coordinator*.log"))
    assert stack.admin_token not in logs

    nodes = node_ids(ui_api, stack)
    headers = [th.text for th in find_all(driver, "#matrix th.node")]
    assert headers == sorted(nodes)
    local, shared = seeded["debian-12-local"], seeded["alma-9-ceph"]
    assert "debian-12-local" in (read(driver, f'#matrix tr[data-template="{local}"]') or "")
    assert "alma-9-ceph" in (read(driver, f'#matrix tr[data-template="{shared}"]') or "")
    # Local storage: on pve-node1 only; shared Ceph: the same VM on every node.
    detail = ui_api.get(f"/templates/{local}/detail?include_instances=true").ok()
    (primary,) = detail["instances"]
    assert cell_status(driver, local, nodes["pve-node1"]) == "available"
    assert cell_text(driver, local, nodes["pve-node1"]).split() == ["v1", str(primary["vmid"]), "P"]
    assert cell_status(driver, local, nodes["pve-node2"]) == "none"
    for node_id in nodes.values():
        assert cell_status(driver, shared, node_id) == "available"
    assert console_errors(driver) == []


def test_a_sync_started_in_the_page_moves_its_bar_to_100_percent(
    browser: Any, ui_stack: Stack, ui_api: Api, seeded: dict[str, int]
) -> None:
    stack, driver = ui_stack, browser
    log_in(driver, stack)
    wait_until(driver, lambda d: find(d, "#live").text == "live", what="the event stream")
    template_id, nodes = seeded["debian-12-local"], node_ids(ui_api, stack)
    find(driver, f'#matrix tr[data-template="{template_id}"] button[data-action="sync"]').click()
    boxes = {int(b.get_attribute("value")): b for b in find_all(driver, "#sync-nodes input")}
    assert not boxes[nodes["pve-node1"]].is_enabled()  # it holds the template already
    assert all(boxes[nodes[n]].is_selected() for n in ("pve-node2", "pve-node3"))  # the default
    find(driver, "#sync-start").click()

    wait_until(driver, lambda d: len(find_all(d, "#tasks tbody tr[data-task]")) == 2, what="the tasks' rows")
    tasks = ui_api.get(f"/templates/sync-tasks?template_id={template_id}").ok()["list"]
    assert sorted(t["target_node"]["node_name"] for t in tasks) == ["pve-node2", "pve-node3"]
    (task,) = [t for t in tasks if t["target_node"]["node_name"] == "pve-node2"]
    row = f'#tasks tr[data-task="{task["task_id"]}"]'
    seen: list[int] = []

    def finished(d: Any) -> bool:
        state = d.execute_script(
            "const r = document.querySelector(arguments[0]);"
            "return r && [r.dataset.status,"
            " Number(r.querySelector('.progress').getAttribute('aria-valuenow'))]",
            row,
        )
        if state is None:
            return False
        status, value = state
        if not seen or seen[-1] != value:
            seen.append(value)
        if 30 <= value < 90 and len([v for v in seen if v >= 30]) == 1:
            shot(d, "dashboard-sync.png")  # once, half way
        return bool(status == "completed")

    wait_until(driver, finished, timeout=90, what="the sync task's row to say completed")
    assert seen[-1] == 100 and seen == sorted(seen), seen
    assert len([v for v in seen if 0 < v < 100]) >= 3, seen  # it moved, not jumped
    assert read(driver, f"{row} .progress .pct") == "100 %"
    wait_until(
        driver,
        lambda d: cell_status(d, template_id, nodes["pve-node2"]) == "available",
        what="pve-node2's cell to say available",
    )
    assert console_errors(driver) == []


def test_an_image_dropped_in_the_upload_dialog_becomes_a_template(
    browser: Any, ui_stack: Stack, ui_api: Api, seeded: dict[str, int], tmp_path: Path
) -> None:
    from selenium.webdriver.support.ui import Select

    stack, driver = ui_stack, browser
    log_in(driver, stack)
    image = qcow2(tmp_path / "ubuntu-24.04.qcow2", 48, 24, seed=7)
    find(driver, "#upload-open").click()
    # What a drop hands the page: the drop zone's file input, which Selenium can fill.
    find(driver, "#upload-file").send_keys(str(image))
    assert find(driver, "#upload-name").get_attribute("value") == "ubuntu-24.04"
    assert find(driver, "#drop-label").text.startswith("ubuntu-24.04.qcow2 (")
    local_node1 = storage_id(ui_api, stack, "local", "pve-node1")
    Select(find(driver, "#upload-storage")).select_by_value(str(local_node1))
    nodes = node_ids(ui_api, stack)
    targets = {int(b.get_attribute("value")): b for b in find_all(driver, "#upload-target-list input")}
    assert set(targets) == {nodes["pve-node2"], nodes["pve-node3"]}
    targets[nodes["pve-node2"]].click()
    shot(driver, "dashboard-upload.png")
    driver.execute_script(
        "window.uploadBar = [];"
        "const bar = document.getElementById('upload-bar').parentElement;"
        "new MutationObserver(() => window.uploadBar.push(Number(bar.getAttribute('aria-valuenow'))))"
        "  .observe(bar, {attributes: true, attributeFilter: ['aria-valuenow']});"
    )
    find(driver, "#upload-start").click()

    status = wait_until(
        driver,
        lambda d: (text := read(d, "#upload-status") or "").startswith("Stored") and text,
        timeout=60,
        what="the upload's answer",
    )
    assert find(driver, "#upload-error").text == ""
    assert find(driver, "#upload-bar").get_attribute("style") == "width: 100%;"
    bar = driver.execute_script("return window.uploadBar")
    assert bar[-1] == 100 and bar == sorted(bar), bar
    assert len({v for v in bar if 0 < v < 100}) >= 2, bar  # it moved while the bytes went
    match = re.match(
        r"Stored and checked: template (\d+) imports on pve-node1, then copied to pve-node2\.", status
    )
    assert match, status
    template_id = int(match[1])
    find(driver, "#upload-cancel").click()
    image.unlink()
    for node in ("pve-node1", "pve-node2"):
        wait_until(
            driver,
            lambda d, node=node: cell_status(d, template_id, nodes[node]) == "available",
            timeout=90,
            what=f"the uploaded template available on {node}",
        )
    assert cell_status(driver, template_id, nodes["pve-node3"]) == "none"
    assert ui_api.get(f"/templates/{template_id}").ok()["template_name"] == "ubuntu-24.04"


def test_a_refused_action_shows_the_api_message(
    browser: Any, ui_stack: Stack, ui_api: Api, seeded: dict[str, int], tmp_path: Path
) -> None:
    from selenium.webdriver.support.ui import Select

    stack, driver = ui_stack, browser
    log_in(driver, stack)
    template_id, nodes = seeded["alma-9-ceph"], node_ids(ui_api, stack)
    # What the API answers to a clone named with a space, asked directly.
    refused = ui_api.post(
        f"/templates/{template_id}/clone", json={"node_id": nodes["pve-node2"], "name": "web 1", "full": None}
    )
    assert refused.status == 400

    # A file really dropped on the upload dialog's zone (a DragEvent carrying it): an ISO, which
    # the API refuses with 415 and its own words, shown in the dialog.
    iso = tmp_path / "installer.iso"
    iso.write_bytes(bytes(1024))
    ceph = storage_id(ui_api, stack, "ceph-storage")
    expected = upload(ui_api, stack, iso, "installer", ceph)
    assert expected.status == 415
    find(driver, "#upload-open").click()
    driver.execute_script(
        "const files = new DataTransfer();"
        "files.items.add(new File([new Uint8Array(1024)], 'installer.iso'));"
        "const zone = document.getElementById('drop-zone');"
        "for (const kind of ['dragenter', 'dragover', 'drop'])"
        "  zone.dispatchEvent(new DragEvent(kind, {dataTransfer: files, bubbles: true, cancelable: true}));"
    )
    assert read(driver, "#drop-label") == "installer.iso (1.0 KiB)"
    find(driver, "#upload-name").clear()
    find(driver, "#upload-name").send_keys("installer")
    Select(find(driver, "#upload-storage")).select_by_value(str(ceph))
    find(driver, "#upload-start").click()
    wait_until(driver, lambda d: read(d, "#upload-error"), what="the upload's error")
    assert read(driver, "#upload-error") == expected.message
    find(driver, "#upload-cancel").click()

    find(driver, f'#matrix tr[data-template="{template_id}"] button[data-action="clone"]').click()
    Select(find(driver, "#clone-node")).select_by_visible_text("pve-node2")
    find(driver, "#clone-name").send_keys("web 1")
    find(driver, "#clone-start").click()
    wait_until(driver, lambda d: find(d, "#clone-error").text, what="the clone's error")
    assert find(driver, "#clone-error").text == refused.message
    assert find(driver, "#clone-dialog").is_displayed()  # left open to correct the name

    name = find(driver, "#clone-name")
    name.clear()
    name.send_keys("web-1")
    find(driver, "#clone-start").click()
    wait_until(driver, lambda d: not find(d, "#clone-dialog").is_displayed(), what="the dialog to close")
    (clone,) = ui_api.get(f"/clones?template_id={template_id}").ok()["list"]
    assert (clone["name"], clone["node"]["node_name"], clone["linked"]) == ("web-1", "pve-node2", True)
    note = read(driver, "#alert-text") or ""
    assert re.fullmatch(
        rf"clone {clone['clone_id']} \(web-1\) on pve-node2: (pending|cloning|completed)", note
    )
    wait_until(
        driver,
        lambda d: read(d, f'#clones tr[data-clone="{clone["clone_id"]}"]', "data-status") == "completed",
        timeout=60,
        what="the clone's row to say completed",
    )


def test_a_waiting_sync_canceled_in_the_page(
    browser: Any, ui_stack: Stack, ui_api: Api, seeded: dict[str, int], small_local: int
) -> None:
    """pve-node3's agent is stopped: a sync to it waits (pending) until it is canceled."""
    stack, driver, template_id = ui_stack, browser, small_local
    nodes = node_ids(ui_api, stack)
    stack.agents["pve-node3"].stop()
    try:
        log_in(driver, stack)
        wait_until(driver, lambda d: read(d, f'#matrix tr[data-template="{template_id}"]'), what="the row")
        find(driver, f'#matrix tr[data-template="{template_id}"] button[data-action="sync"]').click()
        find(driver, f'#sync-nodes input[value="{nodes["pve-node2"]}"]').click()  # pve-node3 only
        find(driver, "#sync-start").click()
        (task,) = wait_until(
            driver, lambda d: ui_api.get(f"/templates/sync-tasks?template_id={template_id}").ok()["list"]
        )
        row = f'#tasks tr[data-task="{task["task_id"]}"]'
        wait_until(driver, lambda d: read(d, row, "data-status") == "pending", what="the pending row")
        assert cell_status(driver, template_id, nodes["pve-node3"]) == "pending"
        find(driver, f'{row} button[data-action="cancel"]').click()
        wait_until(driver, lambda d: read(d, row, "data-status") == "canceled", what="the canceled row")
        assert read(driver, "#alert-text") == f"sync task {task['task_id']} canceled"
        assert cell_status(driver, template_id, nodes["pve-node3"]) == "canceled"
        assert ui_api.get(f"/templates/sync-tasks/{task['task_id']}").ok()["status"] == "canceled"
    finally:
        stack.start_agent("pve-node3")


def test_a_failed_sync_retried_in_the_page(
    browser: Any, ui_stack: Stack, ui_api: Api, small_local: int
) -> None:
    """PVE on the target refuses the import once: the row says why in red, Retry completes it."""
    stack, driver, template_id = ui_stack, browser, small_local
    nodes = node_ids(ui_api, stack)
    log_in(driver, stack)
    refusal = "storage 'local' is not online"
    emulator(
        stack, "POST", "/pvesim/faults", {"kind": "task", "type": "qmcreate", "message": refusal, "times": 1}
    )
    try:
        find(driver, f'#matrix tr[data-template="{template_id}"] button[data-action="sync"]').click()
        for box in find_all(driver, "#sync-nodes input:checked"):
            if box.get_attribute("value") != str(nodes["pve-node2"]):
                box.click()  # pve-node2 only
        find(driver, "#sync-start").click()
        task = wait_until(
            driver,
            lambda d: next(
                (
                    t
                    for t in ui_api.get(f"/templates/sync-tasks?template_id={template_id}").ok()["list"]
                    if t["target_node"]["node_name"] == "pve-node2"
                ),
                None,
            ),
            what="the task",
        )
        row = f'#tasks tr[data-task="{task["task_id"]}"]'
        wait_until(
            driver, lambda d: read(d, row, "data-status") == "failed", timeout=60, what="the failed row"
        )
    finally:
        emulator(stack, "DELETE", "/pvesim/faults")
    assert refusal in (read(driver, f"{row} .error-text") or "")
    assert cell_status(driver, template_id, nodes["pve-node2"]) == "failed"
    shot(driver, "dashboard-states.png")
    find(driver, f'{row} button[data-action="retry"]').click()
    wait_until(
        driver, lambda d: read(d, row, "data-status") == "completed", timeout=60, what="the retried row"
    )
    assert read(driver, f"{row} .error-text") == ""
    wait_until(
        driver,
        lambda d: cell_status(d, template_id, nodes["pve-node2"]) == "available",
        what="pve-node2's cell to say available",
    )


def test_the_page_goes_live_again_by_itself_after_the_coordinator_restarts(
    browser: Any, ui_stack: Stack, seeded: dict[str, int]
) -> None:
    """Last in the module: it stops the coordinator."""
    stack, driver = ui_stack, browser
    log_in(driver, stack)
    wait_until(driver, lambda d: read(d, "#live") == "live", what="the event stream")
    assert stack.coordinator is not None
    stack.coordinator.stop()
    wait_until(driver, lambda d: read(d, "#live") in ("offline", "connecting"), what="the stream to drop")
    stack.start_coordinator()
    wait_until(driver, lambda d: read(d, "#live") == "live", timeout=40, what="the stream back, unasked")
    # Read again on coming back: the matrix is whole.
    nodes = node_ids(Api(stack.api, stack.admin_token), stack)
    for node_id in nodes.values():
        assert cell_status(driver, seeded["alma-9-ceph"], node_id) == "available"
