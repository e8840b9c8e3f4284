"""Benchmark ``sync-loopback``: one node-to-node sync over loopback, against ssh 'cat > dst'.

A stack (emulator, 3 agents, coordinator on SQLite, no send-rate cap) runs in the work
directory. Each repetition uploads a raw image of random bytes to storage ``local`` of
pve-node1 (wait=true: imported first), copies the same file with
``ssh -c aes128-gcm@openssh.com ... 'cat > dst'`` to a local sshd (the baseline), then
POSTs /templates/{id}/sync to pve-node2 and follows the receive on pve-node2's agent
(GET /v1/receives/{task}, every 20 ms). Page cache warm for both (the source file, and the
staged image on pve-node1). After the sync task has completed (imported on pve-node2) the
template is deleted with cascade=true, which removes the staged images and the VMs.

Where the copies land: when run as root, the receiving node's staging directory and the
ssh copy are on one RAM-backed ext4 disk (benchmarks/node_disks.py), so that both sides
are limited by the CPU, as the target means. On this machine's virtio disk, O_DIRECT
writes of 4 MiB run at 360-490 MB/s, and the agent's writes wait for the disk while
``cat > dst`` only fills the page cache: that measured the disk, not the transfer.
Without root the work directory's disk is used, with a note.

What is timed, for the sync: from the POST until the first sample showing every byte
verified and written (scheduling, tickets, session, the stream, every chunk digest and
the running sha256; not the final fdatasync, as ``cat > dst`` does not sync either).
CPU: user+system seconds of the sender agent (pve-node1) and the receiver agent
(pve-node2) over the same window, from /proc/PID/stat.

All of it twice: image bytes over TLS (the default data plane) and in the clear
(data_plane "insecure"), each against its own ssh copies.

Targets: throughput >= 1.0 x ssh over TLS (issue 10: both encrypt), >= 1.25 x in the clear
(issue 4); CPU seconds per GiB, sender + receiver, at most ssh client + server.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

from benchmarks.base import Benchmark, Options
from benchmarks.baselines.ssh import LocalSshd
from benchmarks.loopback_report import SOURCE, TARGET, Rep, Results, report
from benchmarks.measure import (
    cpu_seconds,
    cpu_split,
    machine_busy_seconds,
    make_random_file,
    settle,
    warm_cache,
)
from benchmarks.node_disks import NodeDisks
from benchmarks.receives import AgentConnection, follow
from benchmarks.report import GIB, MIB, Target, mb_per_s, size_label
from benchmarks.stack import DATA_PLANES, Api, start_stack, use_data_plane
from benchmarks.syncs import (
    agent_connections,
    remove_leftovers,
    staged_images,
    start_sync,
    upload_template,
    wait_synced,
)
from benchmarks.system import require_disk, require_program
from demo.stack import Stack

STORAGE = "local"
SIZE = 2 * GIB
QUICK_SIZE = 512 * MIB
# The file, the ssh copy, the staged and the imported image on each of the two nodes.
COPIES_ON_DISK = 6
DISK_NODE = "receiver"  # the RAM disk holds pve-node2's staging and the ssh copy
DISK_SPARE = 1 * GIB


def _polling_cost(agent: AgentConnection, pid: int, seconds: float = 2.0) -> float:
    """CPU seconds per second the agent spends answering the benchmark's 20 ms polls (a 404 here):
    its CPU while polled minus its CPU while left alone (heartbeats), over ``seconds`` each."""
    before, started = cpu_seconds(pid), time.perf_counter()
    time.sleep(seconds)
    alone = (cpu_seconds(pid) - before) / (time.perf_counter() - started)
    before, started = cpu_seconds(pid), time.perf_counter()
    while time.perf_counter() - started < seconds:
        agent.receive(999_999_999)
        time.sleep(0.02)
    return (cpu_seconds(pid) - before) / (time.perf_counter() - started) - alone


def _one_rep(
    api: Api,
    stack: Stack,
    sshd: LocalSshd,
    image: Path,
    copy: Path,
    ids: dict[str, int],
    pids: dict[str, int],
    agents: dict[str, AgentConnection],
) -> Rep:
    size = image.stat().st_size
    name = f"bench-sync-{secrets.token_hex(3)}"
    template_id = upload_template(stack, ids["storage"], image, name)

    warm_cache(image)
    settle()
    ssh_machine = -machine_busy_seconds()
    ssh = sshd.copy(image, copy)
    ssh_machine += machine_busy_seconds()
    copy.unlink()
    settle()

    for staged in staged_images(stack, SOURCE):
        warm_cache(staged)
    settle()
    cpu_start = {name: cpu_seconds(pid) for name, pid in pids.items()}
    machine_start = machine_busy_seconds()
    split_start = {name: cpu_split(pid) for name, pid in pids.items()}
    posted = time.perf_counter()
    tasks = start_sync(api, template_id, {TARGET: ids[TARGET]})
    traces = follow({TARGET: agents[TARGET]}, tasks, size, pids, timeout=600 + size / 20e6)
    wait_synced(api, list(tasks.values()), timeout=600 + size / 20e6)
    api.delete_cascade(template_id)
    left = remove_leftovers(stack)
    if left:
        print(f"  NOTE: left in staging after the cascade delete (removed now): {', '.join(left)}")
    settle()
    return Rep(ssh, traces[TARGET], ssh_machine, posted, cpu_start, machine_start, split_start)


def run(options: Options) -> list[Target]:
    require_program("qemu-img", "qemu-utils", "the agents validate every image with it")
    size = QUICK_SIZE if options.quick else SIZE
    require_disk(
        options.workdir,
        COPIES_ON_DISK * size + DISK_SPARE,
        f"{size_label(size)} (the file, the ssh copy, staged and imported images on two nodes)",
    )
    with contextlib.ExitStack() as exits:
        sshd = exits.enter_context(LocalSshd(options.workdir))  # no baseline, no targets: Skip
        if os.geteuid() == 0:
            disks = exits.enter_context(NodeDisks(options.workdir / "disks", [DISK_NODE], size))
            landing = disks.paths[DISK_NODE]
            print("  the receiver's staging and the ssh copy: a RAM-backed disk of their own", flush=True)
            staging_dirs = {TARGET: landing / "staging"}
        else:
            landing = options.workdir
            print(
                "  NOTE: not root, so no RAM disk: the receiver and the ssh copy write to the "
                "work directory's disk, whose speed may be what is measured",
                flush=True,
            )
            staging_dirs = {}
        print("  starting the stack (emulator, 3 agents, coordinator on SQLite)", flush=True)
        stack = start_stack(options.workdir / "stack", staging_dirs)
        exits.callback(stack.stop)
        agents = agent_connections(stack)
        for agent in agents.values():
            exits.callback(agent.close)
        api = Api(stack)
        source_id = api.node_id(SOURCE)
        ids = {"storage": api.storage_id(source_id, STORAGE), TARGET: api.node_id(TARGET)}
        polling = _polling_cost(agents[TARGET], stack.agents[TARGET].pid)
        image = options.workdir / "bench-sync.raw"
        print(f"  writing {image.name}: {size_label(size)} of random bytes", flush=True)
        make_random_file(image, size)
        settle()
        targets = []
        for plane in DATA_PLANES:
            use_data_plane(stack, plane)
            assert stack.coordinator is not None and stack.coordinator.popen is not None
            pids = {
                "sender": stack.agents[SOURCE].pid,
                "receiver": stack.agents[TARGET].pid,
                "coordinator": stack.coordinator.popen.pid,
            }
            res = Results(size)
            for i in range(options.reps):
                rep = _one_rep(api, stack, sshd, image, landing / "ssh-copy.raw", ids, pids, agents)
                res.reps.append(rep)
                print(
                    f"  data plane {plane}, rep {i + 1}/{options.reps}: "
                    f"ssh {mb_per_s(size, rep.ssh.seconds)} MB/s, sync {mb_per_s(size, rep.seconds)} MB/s "
                    f"(stream {rep.trace.stream_rate / 1e6:.0f}); "
                    f"CPU s ssh {rep.ssh.client_cpu:.2f}+{rep.ssh.server_cpu:.2f}, "
                    f"sync {rep.cpu('sender'):.2f}+{rep.cpu('receiver'):.2f}",
                    flush=True,
                )
            targets += report(res, options.reps, polling, plane)
        image.unlink()
    return targets


BENCHMARK = Benchmark(
    "sync-loopback",
    "one sync pve-node1 -> pve-node2 over loopback: throughput and CPU/GiB vs ssh aes128-gcm",
    run,
)
