"""Benchmark ``sync-fanout``: syncs over 1 Gbit/s links, one network namespace per node.

Five nodes (a source and four targets); each node's agent runs in its own network
namespace, attached to a bridge by a veth pair shaped to 1 Gbit/s each way (netns.py).
The emulator and the coordinator run in the root namespace on the bridge address; the
agents reach them over the bridge, and each other over the shaped links. The agents are
started as the product starts them (demo.stack, under ``ip netns exec``), syncs are started
through the coordinator's API, and the copy is done by the agents.

Each repetition uploads a raw image of random bytes to storage ``local`` of pve-node1
(wait=true) and POSTs a sync to pve-node2; then uploads it again as a second template and
POSTs one sync to pve-node2..5 (the coordinator forms one relay chain). The target agents'
receives are polled every 20 ms (GET /v1/receives/{task}, stamped when the answer arrives).

* goodput of one transfer: bytes verified between the first sample with verified bytes
  and the first sample with all of them, divided by the time between those samples; as a
  fraction of 1 Gbit/s (125 MB/s);
* sync time: from the first verified bytes at the first target to the last target's
  receive ``complete`` (every byte verified, fdatasync'ed, the sha256 matched); the PVE
  import that follows is not included. Ratio: time to 4 targets / time to 1 target.

The same repetition runs a plain TCP relay chain over the same links as a reference
(baselines/relay.py): what this machine's namespaces, shapers and disk allow.

All of it twice: image bytes over TLS (the default data plane) and in the clear
(data_plane "insecure"), each with its own plain TCP relay reference.

Targets (issues 4 and 10, for both): goodput >= 0.95 of the link rate; 4-target time /
1-target time <= 1.3.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import time
from pathlib import Path

from benchmarks.base import Benchmark, Options
from benchmarks.baselines.relay import RelayChain
from benchmarks.chain_timing import ChainTiming, HopTiming
from benchmarks.fanout_report import NODES, SOURCE, TARGETS, Rep, SyncRun, report
from benchmarks.measure import (
    cpu_seconds,
    cpu_split,
    machine_busy_seconds,
    make_random_file,
    settle,
    warm_cache,
)
from benchmarks.netns import BRIDGE_ADDRESS, ShapedNetwork, check_can_run
from benchmarks.node_disks import NodeDisks
from benchmarks.receives import POLL_INTERVAL, AgentConnection, follow
from benchmarks.report import GIB, MIB, Target, size_label
from benchmarks.stack import DATA_PLANES, Api, use_data_plane
from benchmarks.syncs import (
    agent_connections,
    remove_leftovers,
    staged_images,
    start_sync,
    upload_template,
    wait_synced,
)
from benchmarks.system import require_disk, require_program
from demo.stack import Stack, StackSettings, free_port

STORAGE = "local"
SIZE = 1 * GIB
QUICK_SIZE = 256 * MIB
CHAIN_POLL_INTERVAL = 0.05
AGENT_PORT = 8101  # each agent has a namespace, so its ports, of its own
# The file, two staged and imported copies on the source, a received and an imported copy per target.
COPIES_ON_DISK = 5 + 2 * len(TARGETS)
DISK_SPARE = 1 * GIB


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def namespaced_stack(base: Path, net: ShapedNetwork, disks: NodeDisks) -> Stack:
    """The system with each node's agent in its namespace, staging on its own disk."""
    settings = StackSettings(
        base_dir=base,
        nodes=len(NODES),
        host=BRIDGE_ADDRESS,
        coordinator_port=free_port(),  # plain HTTP on loopback, for the benchmark's API calls
        coordinator_tls_port=_free_port(BRIDGE_ADDRESS),  # for the agents in their namespaces
        emulator_port=_free_port(BRIDGE_ADDRESS),
        first_agent_port=AGENT_PORT,
        agent_hosts={node: link.address for node, link in net.links.items()},
        agent_command_prefix={node: net.prefix(node) for node in NODES},
        node_agent_settings={
            node: {"staging_dir": str(path / "staging")} for node, path in disks.paths.items()
        },
    )
    return Stack(settings)


class Fanout:
    """The running system in its namespaces, and one repetition's measurements."""

    def __init__(self, stack: Stack, net: ShapedNetwork, image: Path, disks: NodeDisks) -> None:
        self.stack = stack
        self.net = net
        self.image = image
        self.size = image.stat().st_size
        self.api = Api(stack)
        self.agents: dict[str, AgentConnection] = agent_connections(stack)
        self.ids = {node: self.api.node_id(node) for node in NODES}
        self.storage_id = self.api.storage_id(self.ids[SOURCE], STORAGE)
        # `ip netns exec` execs the agent in place: the process started is the agent.
        self.pids = {node: stack.agents[node].pid for node in NODES}
        addresses = {node: link.address for node, link in net.links.items()}
        self.relay = RelayChain({node: net.prefix(node) for node in NODES}, addresses, disks.paths)

    def close(self) -> None:
        for agent in self.agents.values():
            agent.close()

    def sync(self, template_id: int, targets: list[str]) -> SyncRun:
        """POST one sync to ``targets`` and follow it at each of them until complete."""
        for staged in staged_images(self.stack, SOURCE):
            warm_cache(staged)
        settle()
        links_before = self.net.counters()
        cpu_start = {node: cpu_seconds(pid) for node, pid in self.pids.items()}
        machine_start = machine_busy_seconds()
        split_start = {node: cpu_split(pid) for node, pid in self.pids.items()}
        posted = time.perf_counter()
        tasks = start_sync(self.api, template_id, {node: self.ids[node] for node in targets})
        # Each poll costs the agent answering it CPU that the transfer would otherwise use; four
        # agents polled every 20 ms took ~0.14 of the 2 cores, so the chain is polled less often.
        interval = POLL_INTERVAL if len(targets) == 1 else CHAIN_POLL_INTERVAL
        traces = follow(
            self.agents, tasks, self.size, self.pids, timeout=600 + self.size / 20e6, interval=interval
        )
        links_after = self.net.counters()
        wait_synced(self.api, list(tasks.values()), timeout=600 + self.size / 20e6)
        return SyncRun(traces, posted, cpu_start, machine_start, split_start, links_before, links_after)

    def reference(self, targets: list[str]) -> ChainTiming:
        """The plain TCP relay chain from the source through ``targets``."""
        warm_cache(self.image)
        settle()
        times = self.relay.run(self.image, SOURCE, targets)
        settle()
        return ChainTiming({node: HopTiming.of_relay(times[node]) for node in targets})

    def rep(self) -> Rep:
        runs, templates = [], []
        for targets in ([TARGETS[0]], TARGETS):
            name = f"bench-fanout-{secrets.token_hex(3)}"
            template_id = upload_template(self.stack, self.storage_id, self.image, name)
            templates.append(template_id)
            runs.append(self.sync(template_id, targets))
        for template_id in templates:
            self.api.delete_cascade(template_id)
        left = remove_leftovers(self.stack)
        if left:
            print(f"  NOTE: left in staging after the cascade delete (removed now): {', '.join(left)}")
        settle()
        return Rep(runs[0], runs[1], self.reference([TARGETS[0]]), self.reference(TARGETS))


def run(options: Options) -> list[Target]:
    check_can_run()
    require_program("qemu-img", "qemu-utils", "the agents validate every image with it")
    size = QUICK_SIZE if options.quick else SIZE
    require_disk(options.workdir, COPIES_ON_DISK * size + DISK_SPARE, size_label(size))
    with contextlib.ExitStack() as exits:
        print(f"  network: {len(NODES)} namespaces on a bridge, tbf 1 Gbit/s each way", flush=True)
        net = exits.enter_context(ShapedNetwork(NODES))
        net.check_reachable()
        print(f"  starting the stack ({len(NODES)} agents, one per namespace; SQLite)", flush=True)
        # Room for what a node holds at once: the source two staged uploads, pve-node2 the
        # copies of both templates (the relay reference comes after they are deleted).
        disks = exits.enter_context(NodeDisks(options.workdir / "disks", NODES, 2 * size))
        stack = namespaced_stack(options.workdir / "stack", net, disks)
        exits.callback(stack.stop)  # before the network goes: nothing may be left in a namespace
        stack.start()
        image = options.workdir / "bench-fanout.raw"
        print(f"  writing {image.name}: {size_label(size)} of random bytes", flush=True)
        make_random_file(image, size)
        settle()
        fanout = Fanout(stack, net, image, disks)
        exits.callback(fanout.close)
        targets = []
        for plane in DATA_PLANES:
            use_data_plane(stack, plane)
            reps = []
            for i in range(options.reps):
                rep = fanout.rep()
                reps.append(rep)
                print(
                    f"  data plane {plane}, rep {i + 1}/{options.reps}: one transfer "
                    f"{rep.goodput * 100:.1f} % of link (relay {rep.relay_goodput * 100:.1f} %); "
                    f"1 target {rep.one.timing.to_done:.2f} s, {len(TARGETS)} targets "
                    f"{rep.four.timing.to_done:.2f} s, ratio {rep.ratio:.3f} (relay {rep.relay_ratio:.3f})",
                    flush=True,
                )
            targets += report(reps, size, plane)
        image.unlink()
    return targets


BENCHMARK = Benchmark(
    "sync-fanout",
    "syncs over 1 Gbit/s links (netns + tc tbf): goodput of one transfer, 4 targets vs 1 (root only)",
    run,
)
