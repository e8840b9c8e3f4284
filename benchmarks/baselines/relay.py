"""A reference for the shaped network: the cheapest relay chain plain TCP allows.

``python -m benchmarks.baselines.relay recv --listen HOST:PORT --out FILE [--next HOST:PORT]``
takes one connection, writes what arrives to FILE (1 MiB ``recv_into``, ``write``) and sends
it on to the next hop as it comes; at the end of the stream it fdatasyncs FILE, as an agent
does before its copy is complete. ``... send --file FILE --to HOST:PORT`` sends FILE with
``sendfile``. Each prints one JSON line with CLOCK_MONOTONIC times (comparable across
processes): first byte, last byte, done (after fdatasync). No digests, no framing, no
Python per chunk beyond a few system calls: what the network namespaces, veths, bridge and
tbf shapers of this machine can carry, against which the agents' figures are read.
``RelayChain`` runs one such chain, each process in its node's namespace.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BUFFER = 1 << 20
PORT = 9109
# `python -m benchmarks...` in a namespace needs the repository as its working directory.
REPO = Path(__file__).resolve().parents[2]


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _recv(listen: str, out: Path, next_hop: str | None) -> dict[str, float | int]:
    with socket.create_server(_address(listen)) as server:
        print("ready", flush=True)
        conn, _ = server.accept()
    forward = socket.create_connection(_address(next_hop)) if next_hop else None
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    first = last = 0.0
    total = 0
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with conn:
            while n := conn.recv_into(buf):
                if not first:
                    first = time.monotonic()
                os.write(fd, view[:n])
                if forward is not None:
                    forward.sendall(view[:n])
                total += n
            last = time.monotonic()
        if forward is not None:
            forward.shutdown(socket.SHUT_WR)
            forward.recv(1)  # the next hop closes once it has everything
            forward.close()
        os.fdatasync(fd)
    finally:
        os.close(fd)
    return {"first": first, "last": last, "done": time.monotonic(), "bytes": total}


def _send(path: Path, to: str) -> dict[str, float | int]:
    started = time.monotonic()
    with socket.create_connection(_address(to)) as sock, open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        sent = 0
        while sent < size:
            sent += os.sendfile(sock.fileno(), f.fileno(), sent, size - sent)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)
    return {"first": started, "last": time.monotonic(), "done": time.monotonic(), "bytes": sent}


@dataclass(frozen=True)
class HopTimes:
    first: float
    last: float
    done: float
    bytes: int


class RelayChain:
    """``RelayChain(prefixes, addresses, dirs).run(src, hops)``: one chain, timed per hop.

    ``prefixes[node]`` runs a command in the node's namespace; ``addresses[node]`` is its
    address; ``dirs[node]`` is where it writes what it receives.
    """

    def __init__(
        self, prefixes: dict[str, list[str]], addresses: dict[str, str], dirs: dict[str, Path]
    ) -> None:
        self.prefixes = prefixes
        self.addresses = addresses
        self.dirs = dirs

    def _command(self, node: str, *args: str) -> list[str]:
        return [*self.prefixes[node], sys.executable, "-m", "benchmarks.baselines.relay", *args]

    def run(self, src: Path, source: str, hops: list[str]) -> dict[str, HopTimes]:
        """Send ``src`` from ``source`` through ``hops`` in order; each hop's times."""
        procs: dict[str, subprocess.Popen[str]] = {}
        outputs = {node: self.dirs[node] / f"relay-{node}.raw" for node in hops}
        try:
            # The last hop first: every hop's next one listens before data arrives.
            for i in reversed(range(len(hops))):
                node = hops[i]
                args = ["recv", "--listen", f"{self.addresses[node]}:{PORT}", "--out", str(outputs[node])]
                if i + 1 < len(hops):
                    args += ["--next", f"{self.addresses[hops[i + 1]]}:{PORT}"]
                argv = self._command(node, *args)
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO)
                procs[node] = proc
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"relay on {node} did not start")
            to = f"{self.addresses[hops[0]]}:{PORT}"
            sender = subprocess.run(
                self._command(source, "send", "--file", str(src), "--to", to),
                capture_output=True,
                text=True,
                timeout=3600,
                cwd=REPO,
            )
            if sender.returncode != 0:
                raise RuntimeError(f"relay sender failed: {sender.stderr.strip()}")
            times = {}
            for node, proc in procs.items():
                out, _ = proc.communicate(timeout=600)
                if proc.returncode != 0:
                    raise RuntimeError(f"relay on {node} failed (exit {proc.returncode})")
                times[node] = HopTimes(**json.loads(out.strip().splitlines()[-1]))
            return times
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            for path in outputs.values():
                path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines.relay")
    sub = parser.add_subparsers(dest="command", required=True)
    recv = sub.add_parser("recv")
    recv.add_argument("--listen", required=True)
    recv.add_argument("--out", type=Path, required=True)
    recv.add_argument("--next", dest="next_hop")
    send = sub.add_parser("send")
    send.add_argument("--file", type=Path, required=True)
    send.add_argument("--to", required=True)
    args = parser.parse_args(argv)
    if args.command == "recv":
        result = _recv(args.listen, args.out, args.next_hop)
    else:
        result = _send(args.file, args.to)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
