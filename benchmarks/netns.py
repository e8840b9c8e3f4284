"""A shaped test network: one network namespace per node, each on a bridge through a veth pair.

    root namespace: bridge BRIDGE_ADDRESS/24 (the coordinator and the emulator listen here)
        veth host end (a bridge port)  --tbf-->  the node's inbound:  what it receives
        veth node end (in the node's ns) --tbf-->  the node's outbound: what it sends

Both ends of every veth get ``tc qdisc ... root tbf rate 1gbit burst 256kb latency 50ms``
(the recipe of shared/research/calibration.md), MTU 1500, so each node has a 1 Gbit/s link
each way and node-to-node traffic crosses the sender's and the receiver's shaper. GRO is on
for every veth, as a real NIC's driver has it. Everything
is named with a random tag, and ``down()`` removes it all (namespaces, veths, the bridge)
whatever happened before. Needs root, ``ip`` and ``tc`` (iproute2).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
from dataclasses import dataclass
from types import TracebackType

from benchmarks.base import Skip
from benchmarks.system import CommandFailed, find_program, require_program, run_command

SUBNET = "10.77.0"
BRIDGE_ADDRESS = f"{SUBNET}.1"
PREFIX_LEN = 24
FIRST_HOST = 11
MTU = 1500
RATE_BITS = 1_000_000_000
TBF = ["tbf", "rate", "1gbit", "burst", "256kb", "latency", "50ms"]


@dataclass(frozen=True)
class NodeLink:
    node: str
    netns: str
    host_if: str
    """The veth end on the bridge (root namespace): its shaper limits what the node receives."""
    node_if: str
    """The veth end in the node's namespace: its shaper limits what the node sends."""
    address: str


@dataclass(frozen=True)
class LinkBytes:
    """Bytes (L2, as tbf counts them) each way through one node's link."""

    sent: int
    received: int


def check_can_run() -> None:
    """Skip unless this process may build namespaces (root, iproute2) and the subnet is unused."""
    if os.geteuid() != 0:
        raise Skip("needs root: it creates network namespaces, veth pairs, a bridge and tc shapers")
    for program in ("ip", "tc"):
        if find_program(program) is None:
            raise Skip(f"'{program}' is missing: install iproute2 ('apt-get install iproute2')")
    addresses = json.loads(run_command(["ip", "-j", "-4", "addr", "show"]))
    for link in addresses:
        for info in link.get("addr_info", []):
            if str(info.get("local", "")).startswith(SUBNET + "."):
                raise Skip(
                    f"{SUBNET}.0/{PREFIX_LEN} is already in use here ({link['ifname']} has "
                    f"{info['local']}); another run of this benchmark, or remove it"
                )


class ShapedNetwork:
    """``with ShapedNetwork(["pve-node1", ...]) as net:`` then ``net.links[node]``."""

    def __init__(self, nodes: list[str]) -> None:
        tag = secrets.token_hex(2)
        self.bridge = f"pvsb{tag}"
        self.links = {
            node: NodeLink(
                node,
                netns=f"pvsbench-{tag}-{i}",
                host_if=f"pvs{tag}h{i}",
                node_if=f"pvs{tag}n{i}",
                address=f"{SUBNET}.{FIRST_HOST + i}",
            )
            for i, node in enumerate(nodes)
        }
        self._made_bridge = False
        self._made: list[NodeLink] = []
        self.ethtool = str(require_program("ethtool", "ethtool", "to turn GRO on for the veth links"))

    def prefix(self, node: str) -> list[str]:
        """The command prefix that runs a program in the node's namespace."""
        return ["ip", "netns", "exec", self.links[node].netns]

    def up(self) -> None:
        try:
            run_command(["ip", "link", "add", self.bridge, "mtu", str(MTU), "type", "bridge"])
            self._made_bridge = True
            run_command(["ip", "addr", "add", f"{BRIDGE_ADDRESS}/{PREFIX_LEN}", "dev", self.bridge])
            run_command(["ip", "link", "set", self.bridge, "up"])
            for link in self.links.values():
                self._add_node(link)
        except BaseException:
            self.down()
            raise

    def _add_node(self, link: NodeLink) -> None:
        ns = link.netns
        run_command(["ip", "netns", "add", ns])
        self._made.append(link)
        run_command(
            ["ip", "link", "add", link.host_if, "mtu", str(MTU), "type", "veth"]
            + ["peer", "name", link.node_if, "mtu", str(MTU), "netns", ns]
        )
        run_command(["ip", "link", "set", link.host_if, "master", self.bridge, "up"])
        run_command(["ip", "-n", ns, "addr", "add", f"{link.address}/{PREFIX_LEN}", "dev", link.node_if])
        run_command(["ip", "-n", ns, "link", "set", "lo", "up"])
        run_command(["ip", "-n", ns, "link", "set", link.node_if, "up"])
        try:
            run_command(["tc", "qdisc", "add", "dev", link.host_if, "root", *TBF])
            run_command(["tc", "-n", ns, "qdisc", "add", "dev", link.node_if, "root", *TBF])
        except CommandFailed as exc:
            raise Skip(f"cannot shape the links with tc tbf (kernel module sch_tbf?): {exc}") from None
        # A real NIC hands the kernel coalesced segments (GRO); a veth only does when asked.
        # Without it every 1500-byte packet costs the receiver a trip through the stack, which
        # on 2 shared cores measures the testbed more than the nodes (calibration.md, part 4).
        run_command([self.ethtool, "-K", link.host_if, "gro", "on"])
        run_command(["ip", "netns", "exec", ns, self.ethtool, "-K", link.node_if, "gro", "on"])

    def down(self) -> list[str]:
        """Delete everything made; returns what could not be deleted (empty when all went)."""
        failed = []
        for link in reversed(self._made):
            # Deleting the namespace deletes the veth pair with it (both ends).
            for argv in (["ip", "link", "del", link.host_if], ["ip", "netns", "del", link.netns]):
                try:
                    run_command(argv)
                except CommandFailed as exc:
                    if "Cannot find device" not in str(exc):
                        failed.append(str(exc))
        self._made.clear()
        if self._made_bridge:
            try:
                run_command(["ip", "link", "del", self.bridge])
            except CommandFailed as exc:
                failed.append(str(exc))
            self._made_bridge = False
        return failed

    def check_reachable(self) -> None:
        """Each namespace reaches the bridge address (where the coordinator and the emulator listen)."""
        with socket.create_server((BRIDGE_ADDRESS, 0)) as server:
            port = server.getsockname()[1]
            target = (BRIDGE_ADDRESS, port)
            probe = f"import socket; socket.create_connection({target!r}, timeout=5).close()"
            for node, link in self.links.items():
                try:
                    run_command([*self.prefix(node), sys.executable, "-c", probe])
                except CommandFailed as exc:
                    why = f"{node} ({link.address}) cannot reach {BRIDGE_ADDRESS}: {exc}"
                    raise CommandFailed(why) from None

    def _qdisc_bytes(self, argv: list[str]) -> int:
        for qdisc in json.loads(run_command(argv)):
            if qdisc.get("kind") == "tbf":
                return int(qdisc["bytes"])
        raise CommandFailed(f"no tbf qdisc in {' '.join(argv)}")

    def counters(self) -> dict[str, LinkBytes]:
        """Bytes through each node's two shapers so far."""
        return {
            node: LinkBytes(
                sent=self._qdisc_bytes(
                    ["tc", "-s", "-j", "-n", link.netns, "qdisc", "show", "dev", link.node_if]
                ),
                received=self._qdisc_bytes(["tc", "-s", "-j", "qdisc", "show", "dev", link.host_if]),
            )
            for node, link in self.links.items()
        }

    def __enter__(self) -> ShapedNetwork:
        self.up()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        failed = self.down()
        if failed:
            print("  WARNING: could not remove the test network completely:\n    " + "\n    ".join(failed))
