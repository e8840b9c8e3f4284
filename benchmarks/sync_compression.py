"""Benchmark ``sync-compression``: zstd on the wire between agents (issue 14, item 5c).

An OS-like raw image: half of it text and binaries from /usr (text files and ELF
binaries as they are, a shuffled sample of the tree, concatenated; zstd level 1 makes
2.7x of it here, so the image's ceiling is 1 / (0.5 + 0.5 / 2.7) = 1.46 x the link), half
random bytes, in 16 MiB runs of each (no zeros: the sender never sends those anyway). It
is copied by two agent processes (benchmarks/compression_peer.py: the production Sender,
Receives and routes, plain HTTP) once offering zstd and once not, in the same run, over

* a 1 Gbit/s link: each agent in a network namespace of its own behind tbf shapers
  (netns.py, the recipe of calibration.md): image bytes per second with compression must
  be at least 1.5 x the link's rate (125 MB/s);
* loopback (both in the root namespace): image bytes per second with compression offered
  must be no lower than without (within 5%: the policy switches it off after a probe batch).

Time: from the transfer's start to its end (the last batch answered: every chunk verified
and written, the whole image's sha256 matched), the manifest built before. Median of
``--reps``. Skips the shaped link where namespaces cannot be made (not root, no iproute2).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.base import Benchmark, Options, Skip
from benchmarks.machine_bounds import zstd_ceiling, zstd_ratios
from benchmarks.measure import median
from benchmarks.netns import RATE_BITS, ShapedNetwork, check_can_run
from benchmarks.report import Target, mb_per_s, size_label, table
from benchmarks.system import require_disk
from shared.manifest import CHUNK
from shared.tickets import TicketSigner

SIZE = 2 << 30
QUICK_SIZE = 512 << 20
RUN = 16 << 20
PORT = 18877
NAME = "upload-1-0a1b2c3d.raw"
MODES = ("plain", "zstd")
LINK_RATE = RATE_BITS / 8


def _usr_files() -> list[Path]:
    """Every file under /usr, in an order shuffled once (seed 0): a sample of the whole tree,
    not of the first big directory (here a JDK's jimage, already compressed). Only text and
    ELF binaries are used (make_os_like)."""
    found: list[Path] = []
    for dirpath, _dirs, files in os.walk("/usr"):
        for name in files:
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():
                found.append(path)
    found.sort()
    random.Random(0).shuffle(found)
    return found


def make_os_like(path: Path, size: int) -> float:
    """Write the image; returns the share of it that is /usr content (the rest random)."""
    files = iter(_usr_files())
    text = 0
    with open(path, "wb") as out:
        for at in range(0, size, RUN):
            want = min(RUN, size - at)
            if (at // RUN) % 2:
                out.write(os.urandom(want))
                continue
            run = bytearray()
            while len(run) < want:
                path_ = next(files, None)
                if path_ is None:
                    run += os.urandom(want - len(run))  # /usr ran out: random
                    break
                try:
                    data = path_.read_bytes()
                except OSError:
                    continue
                if data.startswith(b"\x7fELF") or b"\0" not in data[:4096]:  # binaries, text
                    run += data[: want - len(run)]
            out.write(run)
            text += want
    return text / size


class Peers:
    def __init__(self, workdir: Path, image_root: Path, key: Path) -> None:
        self.workdir, self.image_root, self.key = workdir, image_root, key
        self.runs = 0

    def copy(
        self, mode: str, host: str, send_prefix: list[str], receive_prefix: list[str]
    ) -> dict[str, float]:
        """One copy; {"seconds", "crossed", "size"}."""
        self.runs += 1
        root = self.workdir / f"receiver-{self.runs}"
        peer = [sys.executable, "-m", "benchmarks.compression_peer"]
        receiver = subprocess.Popen(
            [*receive_prefix, *peer, "receive", str(root), str(self.key), host, str(PORT)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert receiver.stdout is not None
            if receiver.stdout.readline().strip() != "ready":
                raise RuntimeError("the receiving agent did not start")
            url = f"http://{host}:{PORT}"
            argv = [
                *send_prefix,
                *peer,
                "send",
                str(self.image_root),
                NAME,
                str(self.key),
                url,
                str(self.runs),
                mode,
            ]
            result = subprocess.run(argv, capture_output=True, text=True, timeout=900)
            if result.returncode != 0:
                raise RuntimeError(f"the sending agent failed: {result.stderr[-2000:]}")
            return dict(json.loads(result.stdout.strip().splitlines()[-1]))
        finally:
            receiver.terminate()
            receiver.wait(timeout=30)
            shutil.rmtree(root, ignore_errors=True)


def _measure(
    peers: Peers, reps: int, host: str, send: list[str], receive: list[str]
) -> dict[str, list[dict[str, float]]]:
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for _ in range(reps):
        for mode in MODES:  # alternated: drift in the machine's load hits both alike
            runs[mode].append(peers.copy(mode, host, send, receive))
    return runs


def _rate(runs: list[dict[str, float]]) -> float:
    return median([r["size"] / r["seconds"] for r in runs])


def _rows(where: str, runs: dict[str, list[dict[str, float]]]) -> list[list[str]]:
    rows = []
    for mode in MODES:
        seconds = median([r["seconds"] for r in runs[mode]])
        size = int(runs[mode][0]["size"])
        crossed = median([r["crossed"] / r["size"] for r in runs[mode]])
        rows.append([f"{where}, {mode}", f"{seconds:.2f}", mb_per_s(size, seconds), f"{crossed:.2f}"])
    return rows


def _usr_sample(image: Path, size: int, pieces: int = 16) -> bytes:
    """A chunk (4 MiB) from each of ``pieces`` of the image's /usr runs (the even ones), spread
    evenly over it: what /usr content the tree's shuffled order put where differs a lot."""
    runs = range(0, size, 2 * RUN)
    step = max(len(runs) // pieces, 1)
    sample = bytearray()
    with open(image, "rb") as f:
        for at in runs[::step][:pieces]:
            f.seek(at)
            sample += f.read(CHUNK)
    return bytes(sample)


def _print_ceilings(image: Path, size: int, share: float, goodput: float) -> None:
    """What the image allows at each zstd level over this link (machine_bounds.zstd_ceiling)."""
    for level, (ratio, rate) in zstd_ratios(_usr_sample(image, size)).items():
        ceiling = zstd_ceiling(ratio, 1 - share, goodput)
        print(
            f"  the image's ceiling at zstd level {level}: {ratio:.2f}x of its /usr half at {rate:.0f} MB/s "
            f"a core -> at most {ceiling:.2f} x the link"
        )


def run(options: Options) -> list[Target]:
    size = QUICK_SIZE if options.quick else SIZE
    require_disk(options.workdir, 3 * size, "the image and a copy of it")
    image_root = options.workdir / "source"
    image_root.mkdir()
    started = time.monotonic()
    share = make_os_like(image_root / NAME, size)
    key = options.workdir / "ticket-key"
    TicketSigner(key)  # (made once: both peers read it)
    print(
        f"  image: {size_label(size)} raw, {share:.0%} /usr content, the rest random "
        f"(made in {time.monotonic() - started:.0f}s); {options.reps} rep(s) per mode"
    )
    peers = Peers(options.workdir, image_root, key)
    loopback = _measure(peers, options.reps, "127.0.0.1", [], [])
    rows = _rows("loopback", loopback)
    targets = [
        Target(
            "loopback: image rate with zstd offered / without",
            _rate(loopback["zstd"]) / _rate(loopback["plain"]),
            ">=",
            0.95,
            note="no slower (5% noise)",
        )
    ]
    shaped: dict[str, list[dict[str, float]]] | None = None
    try:
        check_can_run()
        with ShapedNetwork(["pve-node1", "pve-node2"]) as net:
            host = net.links["pve-node2"].address
            shaped = _measure(peers, options.reps, host, net.prefix("pve-node1"), net.prefix("pve-node2"))
    except Skip as exc:
        print(f"  (1 Gbit/s link skipped: {exc})")
    if shaped is not None:
        rows += _rows("1 Gbit/s link", shaped)
    print(table(["copy", "seconds", "image MB/s", "crossed / image"], rows))
    if shaped is not None:
        goodput = _rate(shaped["plain"]) / LINK_RATE
        print(f"  1 Gbit/s link without compression: {goodput:.2f} x the link rate")
        _print_ceilings(image_root / NAME, size, share, goodput)
    targets.append(
        Target(
            "1 Gbit/s link: image rate with zstd / link rate",
            None if shaped is None else _rate(shaped["zstd"]) / LINK_RATE,
            ">=",
            1.5,
        )
    )
    return targets


BENCHMARK = Benchmark(
    "sync-compression",
    "zstd on the wire: an OS-like image over 1 Gbit/s (netns) and loopback, with and without",
    run,
)
