"""`pvesphere`, the installed console script, run as a user runs it: as a process, against a
real stack (emulator, agents, coordinator), with stdout a pipe (so: plain lines).

The stack is the session's shared SQLite one; every test names its own templates.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import secrets
import select
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from client.cli import commands
from demo.stack import Stack, free_port
from tests.support import images, tus
from tests.support.api import Api
from tests.support.image_server import ImageServer, image_server_ca, serving
from tests.support.uploads import emulator, import_dir, node_ids, storage_id, wait_for

PVESPHERE = Path(sys.executable).parent / "pvesphere"
TIMEOUT = 120


def pvesphere(
    *args: str, stack: Stack | None = None, env: dict[str, str] | None = None, home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed script with no PVESPHERE_* of the caller's, no config file of the user's
    (XDG_CONFIG_HOME: an empty place), and the stack's URL and admin token if given."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PVESPHERE_")}
    base["XDG_CONFIG_HOME"] = str(home or Path("/nonexistent-pvesphere-test"))
    if stack is not None:
        base |= {"PVESPHERE_URL": stack.coordinator_url, "PVESPHERE_TOKEN": stack.admin_token}
    return subprocess.run(
        [str(PVESPHERE), *args], capture_output=True, text=True, timeout=TIMEOUT, env=base | (env or {})
    )


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture
def api(stack_sqlite: Stack) -> Api:
    return Api(stack_sqlite.api, stack_sqlite.admin_token)


# ------------------------------------------------------------------ no stack needed


def test_every_command_answers_help() -> None:
    every = commands()
    # What the user's guide of the client (README) promises is there.
    assert {" ".join(c) for c in every} >= {
        "upload",
        "import-url",
        "import-volume",
        "templates list",
        "templates show",
        "templates sync",
        "templates delete",
        "versions list",
        "versions create",
        "versions activate",
        "versions delete",
        "tasks list",
        "tasks watch",
        "tasks retry",
        "tasks cancel",
        "clone",
        "resolve",
        "nodes",
        "storages",
        "agents",
        "clusters",
    }
    with ThreadPoolExecutor(4) as pool:  # ~0.3 s each, mostly waiting on imports
        results = list(pool.map(lambda c: pvesphere(*c, "--help"), [[], *every]))
    for command, result in zip([[], *every], results, strict=True):
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout.startswith(f"usage: pvesphere {' '.join(command)}".rstrip()), result.stdout
        assert "--json" in result.stdout and "--url" in result.stdout
    assert "exit codes:" in pvesphere("--help").stdout


def test_a_missing_token_says_the_three_ways_to_give_it(tmp_path: Path) -> None:
    result = pvesphere("nodes", env={"PVESPHERE_URL": "http://127.0.0.1:1"}, home=tmp_path)
    assert result.returncode == 2
    config = tmp_path / "pvesphere" / "config.toml"
    assert result.stderr == (
        f'pvesphere: no token: give --token, set $PVESPHERE_TOKEN, or put token = "..." in {config}\n'
    )
    assert result.stdout == ""


def test_an_unreachable_coordinator_is_exit_4() -> None:
    result = pvesphere(
        "nodes", env={"PVESPHERE_URL": f"http://127.0.0.1:{free_port()}", "PVESPHERE_TOKEN": "x"}
    )
    assert result.returncode == 4, result.stderr
    assert "cannot reach the coordinator at http://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------ against the stack


def test_upload_wait_with_a_sync_ends_synced_in_plain_lines(
    stack_sqlite: Stack, api: Api, tmp_path: Path
) -> None:
    image = images.qcow2(tmp_path / "debian-12.qcow2", size_mib=32, data_mib=8)
    name = _name("cli-debian")
    result = pvesphere(
        "upload",
        str(image),
        "--name",
        name,
        "--cluster",
        "pve-demo",
        "--storage",
        "local@pve-node1",
        "--sync",
        "pve-node2",
        "--description",
        "from the CLI",
        "--wait",
        stack=stack_sqlite,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\x1b" not in result.stdout  # a pipe: no escape sequence, no redrawing
    lines = result.stdout.splitlines()
    size = f"{image.stat().st_size / (1 << 20):.1f} MiB"
    assert any(line.startswith(f"upload debian-12.qcow2: 100% {size} of {size}, ") for line in lines), lines
    assert "pve-node1 import: 100% imported" in lines
    [template] = api.get(f"/templates?name={name}").ok()["list"]
    [task] = api.get(f"/templates/sync-tasks?template_id={template['id']}").ok()["list"]
    assert task["status"] == "completed" and task["target_node"]["node_name"] == "pve-node2"
    assert any(line.startswith(f"pve-node2 sync #{task['task_id']}: 100% completed") for line in lines), lines
    # The final state, as the API has it.
    instances = api.get(f"/templates/{template['id']}/instances").ok()["instances"]
    assert {(i["node_name"], i["status"]) for i in instances} == {
        ("pve-node1", "available"),
        ("pve-node2", "available"),
    }
    final = lines[lines.index(f"template {template['id']} version 1: imported") :]
    assert final[1] == f"sync task {task['task_id']} to pve-node2: completed"
    assert final[2].split() == ["NODE", "VMID", "STORAGE", "STATUS", "PRIMARY"]
    assert sorted(line.split()[:2] for line in final[3:]) == sorted(
        [i["node_name"], str(i["vmid"])] for i in instances
    )

    # One more node later; a node that has it is skipped, and said so.
    synced = pvesphere(
        "templates",
        "sync",
        str(template["id"]),
        "--nodes",
        "pve-node3,pve-node2",
        "--wait",
        stack=stack_sqlite,
    )
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert synced.stdout.splitlines()[0].startswith("pve-node2: skipped, ")
    [row] = [line.split() for line in synced.stdout.splitlines() if line.startswith(tuple("0123456789"))]
    assert row[4:7] == ["pve-node1", "pve-node3", "completed"]  # ID, TEMPLATE (id name), VERSION, FROM, TO
    # The cascade delete removes every node's VM.
    deleted = pvesphere("templates", "delete", str(template["id"]), "--cascade", stack=stack_sqlite)
    assert re.fullmatch(
        rf"template {template['id']}: deleted \(3 VMs, \d+ images removed\)\n", deleted.stdout
    ), deleted.stdout + deleted.stderr
    assert api.get(f"/templates?name={name}").ok()["total"] == 0


def test_on_a_terminal_the_bars_are_drawn(stack_sqlite: Stack, api: Api, tmp_path: Path) -> None:
    image = images.qcow2(tmp_path / "tty.qcow2", size_mib=16, data_mib=2)
    ceph = storage_id(api, stack_sqlite, "ceph-storage")
    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PVESPHERE_")}
    env |= {"PVESPHERE_URL": stack_sqlite.coordinator_url, "PVESPHERE_TOKEN": stack_sqlite.admin_token}
    args = ["upload", str(image), "--name", _name("cli-tty"), "--cluster", "pve-demo", "--storage", str(ceph)]
    proc = subprocess.Popen(
        [str(PVESPHERE), *args, "--wait"],
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
        env=env,
    )
    os.close(secondary)
    drawn = b""
    deadline = time.monotonic() + TIMEOUT
    with contextlib.suppress(OSError):  # EIO once the process has closed its end
        while time.monotonic() < deadline:
            if select.select([primary], [], [], 1)[0]:
                if not (chunk := os.read(primary, 65536)):
                    break
                drawn += chunk
    os.close(primary)
    assert proc.wait(timeout=TIMEOUT) == 0, drawn
    text = drawn.decode()
    assert "\x1b[" in text and "━" in text  # rich's bars, redrawn in place
    assert "upload tty.qcow2" in text and "pve-node" in text and "imported" in text


def test_json_is_the_apis_data(stack_sqlite: Stack, api: Api, tmp_path: Path) -> None:
    image = images.qcow2(tmp_path / "alpine.qcow2", size_mib=16, data_mib=2)
    name = _name("cli-json")
    ceph = storage_id(api, stack_sqlite, "ceph-storage")
    uploaded = pvesphere(
        "upload", str(image), "--name", name, "--cluster", str(stack_sqlite.cluster_id),
        "--storage", str(ceph), "--wait", "--json", stack=stack_sqlite,
    )  # fmt: skip
    assert uploaded.returncode == 0, uploaded.stderr
    data = json.loads(uploaded.stdout)  # only the JSON on stdout: progress went to stderr
    detail = api.get(f"/templates/{data['template_id']}/detail?include_instances=true").ok()
    assert data["status"] == "imported" and data["error_message"] is None
    assert data["upload_id"] == detail["upload_info"]["upload_id"]
    assert (data["storage_type"], data["is_shared"], data["sync_tasks"]) == ("rbd", True, [])
    assert "upload alpine.qcow2: 100%" in uploaded.stderr

    shown = pvesphere("--json", "templates", "show", str(data["template_id"]), stack=stack_sqlite)
    assert json.loads(shown.stdout) == detail
    nodes = pvesphere("nodes", "--json", "--page-size", "50", stack=stack_sqlite)
    assert json.loads(nodes.stdout) == api.get("/nodes?page_size=50").ok()
    resolved = pvesphere(
        "resolve",
        "--cluster",
        "pve-demo",
        "--name",
        name,
        "--node",
        "pve-node3",
        "--json",
        stack=stack_sqlite,
    )
    query = f"cluster_id={stack_sqlite.cluster_id}&name={name}&node=pve-node3"
    assert json.loads(resolved.stdout) == api.get(f"/templates/resolve?{query}").ok()


# Run in a process of its own, so that the largest child it has waited for is pvesphere.
PEAK_RSS = """
import resource, subprocess, sys
ran = subprocess.run(sys.argv[1:], capture_output=True)
print(ran.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def test_a_large_upload_is_streamed_from_disk_not_held(stack_sqlite: Stack, api: Api, tmp_path: Path) -> None:
    """128 MiB sent; the client stays near its ~40 MB of code (measured: 46 MB for 400 MiB)."""
    image = images.raw_with_data(tmp_path / "big.raw", size_mib=128, data_mib=4)
    ceph, name = storage_id(api, stack_sqlite, "ceph-storage"), _name("cli-big")
    args = ["upload", str(image), "--name", name, "--cluster", "pve-demo", "--storage", str(ceph), "--wait"]
    env = {
        **os.environ,
        "PVESPHERE_URL": stack_sqlite.coordinator_url,
        "PVESPHERE_TOKEN": stack_sqlite.admin_token,
    }
    try:
        measured = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, str(PVESPHERE), *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=env,
        )
    finally:
        image.unlink()
        for template in api.get(f"/templates?name={name}").ok()["list"]:  # its 128 MiB on the stack's disk
            api.delete(f"/templates/{template['id']}?cascade=true")
    returncode, peak_kib = map(int, measured.stdout.split())
    assert returncode == 0, measured.stderr
    assert peak_kib < 100 * 1024, f"pvesphere peaked at {peak_kib} KiB uploading 128 MiB"


def test_an_image_refused_by_validation_is_the_apis_422_and_exit_3(
    stack_sqlite: Stack, api: Api, tmp_path: Path
) -> None:
    image = images.qcow2(tmp_path / "whole.qcow2", size_mib=16, data_mib=4)
    bad = images.truncated(tmp_path / "cut.qcow2", image)
    name = _name("cli-cut")
    result = pvesphere(
        "upload", str(bad), "--name", name, "--cluster", "pve-demo", "--storage", "ceph-storage", "--wait",
        stack=stack_sqlite,
    )  # fmt: skip
    assert result.returncode == 3
    [line] = result.stderr.splitlines()
    assert line.startswith("pvesphere: ") and line.endswith(" (image_rejected, HTTP 422)"), line
    assert "corrupt or truncated" in line
    assert api.get(f"/templates?name={name}").ok()["total"] == 0


def test_an_import_that_fails_is_exit_1_and_says_why(stack_sqlite: Stack, api: Api, tmp_path: Path) -> None:
    image = images.qcow2(tmp_path / "doomed.qcow2", size_mib=16, data_mib=2)
    nodes = node_ids(api, stack_sqlite)
    fault = emulator(
        stack_sqlite, "POST", "/pvesim/faults",
        {"kind": "task", "type": "qmcreate", "message": "out of space (cli test)", "times": 1},
    )  # fmt: skip
    try:
        result = pvesphere(
            "upload", str(image), "--name", _name("cli-doomed"), "--cluster", "pve-demo",
            "--storage", "local@pve-node1", "--sync", str(nodes["pve-node3"]), "--wait", stack=stack_sqlite,
        )  # fmt: skip
    finally:
        emulator(stack_sqlite, "DELETE", f"/pvesim/faults/{fault['id']}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pve-node1 import: 0% failed: " in result.stdout
    [final] = [line for line in result.stdout.splitlines() if line.startswith("template ")]
    assert re.fullmatch(
        r"template \d+ version 1: failed: import on pve-node1 failed: .*out of space \(cli test\)", final
    ), final
    # Its sync task had nothing to copy: failed too. Watching it ends at once, as it ended.
    task = re.search(r"^sync task (\d+) to pve-node3: failed: ", result.stdout, re.M)
    assert task is not None, result.stdout
    watched = pvesphere("tasks", "watch", task[1], "--json", stack=stack_sqlite)
    assert watched.returncode == 1
    assert json.loads(watched.stdout) == [api.get(f"/templates/sync-tasks/{task[1]}").ok()]
    canceled = pvesphere("tasks", "cancel", task[1], stack=stack_sqlite)
    assert canceled.returncode == 3
    assert canceled.stderr.startswith(f"pvesphere: sync task {task[1]} ") and canceled.stderr.endswith(
        "HTTP 409)\n"
    ), canceled.stderr


def test_https_with_the_cluster_ca_from_a_config_file(stack_sqlite: Stack, tmp_path: Path) -> None:
    config = tmp_path / "pvesphere.toml"
    config.write_text(
        f'url = "{stack_sqlite.coordinator_https_url}"\ntoken = "{stack_sqlite.admin_token}"\n'
        f'cacert = "{stack_sqlite.ca_file}"\n'
    )
    result = pvesphere("--config", str(config), "agents", "--live")
    assert result.returncode == 0, result.stderr
    assert sorted(line.split()[1] for line in result.stdout.splitlines()[1:]) == stack_sqlite.node_names()
    # The system's CAs do not know the cluster's: refused, and said so.
    config.write_text(f'url = "{stack_sqlite.coordinator_https_url}"\ntoken = "{stack_sqlite.admin_token}"\n')
    refused = pvesphere("agents", env={"PVESPHERE_CLIENT_CONFIG": str(config)})
    assert refused.returncode == 4
    assert "certificate verify failed" in refused.stderr
    # A flag beats the file: a wrong token given on the command line is the API's 401.
    denied = pvesphere(
        "agents", "--token", "pvst_wrong", "--cacert", str(stack_sqlite.ca_file), "--config", str(config)
    )
    assert denied.returncode == 3
    assert denied.stderr.endswith("HTTP 401)\n"), denied.stderr


def test_import_url_downloads_checks_and_follows_the_syncs(
    stack_sqlite: Stack, api: Api, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    image = images.qcow2(tmp_path / "fedora-cloud.qcow2", size_mib=16, data_mib=2, seed=21)
    name = _name("cli-url")
    with serving(ImageServer(image_server_ca(tmp_path_factory))) as server:
        sha = server.add("fedora-cloud.qcow2", image)
        url = f"{server.url}/fedora-cloud.qcow2"
        wrong = pvesphere(
            "import-url", url, "--sha256", "0" * 64, "--name", name, "--cluster", "pve-demo",
            "--storage", "local@pve-node1", stack=stack_sqlite,
        )  # fmt: skip
        done = pvesphere(
            "import-url", url, "--sha256", sha, "--name", name, "--cluster", "pve-demo",
            "--storage", "local@pve-node1", "--sync", "pve-node2", "--wait", "--json", stack=stack_sqlite,
        )  # fmt: skip
    assert wrong.returncode == 3
    assert wrong.stderr.splitlines()[-1].endswith(" (checksum_mismatch, HTTP 422)"), wrong.stderr
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["status"], data["error_message"]) == ("imported", None)
    assert [(t["target_node_name"], t["status"]) for t in data["sync_tasks"]] == [("pve-node2", "completed")]
    assert api.get(f"/templates/{data['template_id']}/detail").ok()["upload_info"]["sha256"] == sha


def test_import_volume_copies_an_import_volume_and_follows_the_syncs(
    stack_sqlite: Stack, api: Api, tmp_path: Path
) -> None:
    name = _name("cli-volume")
    folder = import_dir(stack_sqlite, "pve-node1", "local")
    folder.mkdir(parents=True, exist_ok=True)
    volume = images.qcow2(folder / f"{name}.qcow2", size_mib=16, data_mib=2, seed=23)
    try:
        missing = pvesphere(
            "import-volume", "local:import/nosuch.qcow2", "--node", "pve-node1", "--name", name,
            "--cluster", "pve-demo", "--storage", "local@pve-node1", stack=stack_sqlite,
        )  # fmt: skip
        done = pvesphere(
            "import-volume", f"local:import/{volume.name}", "--node", "pve-node1", "--name", name,
            "--cluster", "pve-demo", "--storage", "local@pve-node1", "--sync", "pve-node2",
            "--wait", "--json", stack=stack_sqlite,
        )  # fmt: skip
    finally:
        volume.unlink()
    assert missing.returncode == 3
    assert missing.stderr.splitlines()[-1].endswith(" (volume_not_found, HTTP 404)"), missing.stderr
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["status"], data["error_message"]) == ("imported", None)
    assert [(t["target_node_name"], t["status"]) for t in data["sync_tasks"]] == [("pve-node2", "completed")]


def _upload_to_ceph(stack: Stack, image: Path, name: str, *more: str) -> subprocess.CompletedProcess[str]:
    return pvesphere(
        "upload",
        str(image),
        "--name",
        name,
        "--cluster",
        "pve-demo",
        "--storage",
        "ceph-storage",
        *more,
        stack=stack,
    )


def test_an_interrupted_resumable_upload_goes_on_with_resume(
    stack_sqlite: Stack, api: Api, tmp_path: Path
) -> None:
    image = images.qcow2(tmp_path / "resumed.qcow2", size_mib=32, data_mib=8, seed=21)
    data = image.read_bytes()
    name = _name("cli-tus")
    upload_id, _ = tus.create_on_ceph(stack_sqlite, api, image, name)
    # The first attempt's connection broke after part of the image.
    tus.cut_patch(
        stack_sqlite, stack_sqlite.admin_token, upload_id, 0, data[: len(data) // 2], claimed=len(data)
    )
    held = wait_for(lambda: tus.offset(api, upload_id), timeout=30, what="the cut-off PATCH's bytes kept")
    result = _upload_to_ceph(stack_sqlite, image, name, "--resume", str(upload_id), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    size = f"{len(data) / (1 << 20):.1f} MiB"
    assert any(line.startswith(f"upload resumed.qcow2: 100% {size} of {size}, ") for line in lines), lines
    assert any(line.endswith("import: 100% imported") for line in lines), lines
    [template] = api.get(f"/templates?name={name}").ok()["list"]
    info = api.get(f"/templates/{template['id']}/detail").ok()["upload_info"]
    assert (info["upload_id"], info["status"], info["file_size"]) == (upload_id, "imported", len(data))
    assert 0 < held < len(data)


def test_a_resumable_upload_from_the_start(stack_sqlite: Stack, api: Api, tmp_path: Path) -> None:
    image = images.qcow2(tmp_path / "fresh.qcow2", size_mib=16, data_mib=2, seed=22)
    name = _name("cli-tus-new")
    result = _upload_to_ceph(stack_sqlite, image, name, "--resumable", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert answer["status"] in ("uploaded", "importing", "imported"), answer
    assert answer["import_node"]["node_name"] and answer["sync_tasks"] == []
    assert f"--resume {answer['upload_id']}" in result.stderr
