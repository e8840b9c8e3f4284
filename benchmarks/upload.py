"""Benchmark ``upload``: POST /api/v1/templates/upload of a raw image, against ssh 'cat > dst'.

A stack (emulator, 3 agents, coordinator on SQLite) runs in the work directory. A raw
image of random bytes is uploaded to storage ``local`` of pve-node1, streamed from disk,
and each repetition is timed from the first body byte until the answer (which comes
once the file is stored, fsynced and validated, before the import). The baseline is
the same file copied with ``ssh -c aes128-gcm@openssh.com ... 'cat > dst'`` to a local
sshd, in the same repetition, with the page cache warm for both. Meanwhile the RSS of
the coordinator and of pve-node1's agent is sampled. After each upload the import is
awaited and the template deleted with cascade=true, so the disk does not fill up.

Targets (issue 3): each process peaks at <= 80 MiB; the peak does not grow with the
file (largest minus smallest size <= 16 MiB); throughput >= 0.8 x the ssh baseline.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.base import Benchmark, Options, Skip
from benchmarks.baselines.ssh import LocalSshd, Transfer
from benchmarks.measure import ProcessWatch, Usage, make_random_file, median, proc_status, settle, warm_cache
from benchmarks.multipart import Reply, post_file
from benchmarks.report import GIB, MIB, Target, mb_per_s, mib, size_label, table
from benchmarks.stack import Api, start_stack
from benchmarks.system import require_program
from demo.stack import Stack

NODE = "pve-node1"
STORAGE = "local"
SIZES = (64 * MIB, 4 * GIB)
QUICK_SIZES = (64 * MIB, 512 * MIB)
RSS_LIMIT = 80 * MIB
GROWTH_LIMIT = 16 * MIB
THROUGHPUT_RATIO = 0.8
# Besides the file: the staged copy, the imported disk and the ssh copy, plus room to spare.
COPIES_ON_DISK = 4
DISK_SPARE = 1 * GIB


@dataclass
class Rep:
    ssh: Transfer | None
    upload: Reply
    client_cpu: float
    """CPU seconds of this process (the uploading client) during the upload."""
    usage: dict[str, Usage]


@dataclass
class SizeRun:
    size: int
    reps: list[Rep] = field(default_factory=list)

    @property
    def label(self) -> str:
        return size_label(self.size)

    def ssh_median(self, figure: str) -> float | None:
        """Median of a Transfer field over the reps that had an ssh baseline."""
        values = [getattr(r.ssh, figure) for r in self.reps if r.ssh is not None]
        return median(values) if values else None

    @property
    def ssh_seconds(self) -> float | None:
        return self.ssh_median("seconds")

    @property
    def upload_seconds(self) -> float:
        return median([r.upload.seconds for r in self.reps])

    @property
    def answer_wait(self) -> float:
        return median([r.upload.answer_wait for r in self.reps])

    @property
    def client_cpu(self) -> float:
        return median([r.client_cpu for r in self.reps])

    def cpu(self, process: str) -> float:
        return median([r.usage[process].cpu for r in self.reps])

    @property
    def ratio(self) -> float | None:
        """Upload throughput / ssh throughput (medians)."""
        ssh = self.ssh_seconds
        return None if ssh is None else ssh / self.upload_seconds

    def peak(self, process: str) -> int:
        return max(r.usage[process].peak for r in self.reps)

    def hwm(self, process: str) -> int:
        return max(r.usage[process].hwm for r in self.reps)

    def sampled(self, process: str) -> int:
        return max(r.usage[process].sampled_max for r in self.reps)


def _disk_plan(workdir: Path, sizes: tuple[int, ...]) -> list[int]:
    free = shutil.disk_usage(workdir).free
    kept = []
    for size in sizes:
        need = COPIES_ON_DISK * size + DISK_SPARE
        if need <= free:
            kept.append(size)
        else:
            print(
                f"  NOTE: skipping {size_label(size)}: it needs {need / GIB:.1f} GiB free in {workdir} "
                f"(the file, the staged copy, the imported disk and the ssh copy), "
                f"{free / GIB:.1f} GiB are free; use --workdir on a bigger disk",
                flush=True,
            )
    if not kept:
        raise Skip(f"not enough free disk in {workdir} for even {size_label(sizes[0])}")
    return kept


def _start_sshd(workdir: Path, exits: contextlib.ExitStack) -> LocalSshd | None:
    try:
        return exits.enter_context(LocalSshd(workdir))
    except Skip as exc:
        print(f"  NOTE: no ssh baseline, the throughput targets are skipped: {exc}", flush=True)
        return None


def _upload_once(stack: Stack, storage_id: int, image: Path, name: str) -> tuple[Reply, int]:
    fields = {
        "template_name": name,
        "cluster_id": str(stack.cluster_id),
        "storage_id": str(storage_id),
        "description": "pvesphere benchmark upload",
    }
    reply = post_file(stack.api + "/templates/upload", stack.admin_token, fields, image)
    if reply.status != 200:
        coordinator = stack.coordinator.tail(15) if stack.coordinator else ""
        raise RuntimeError(f"upload of {image.name} failed: HTTP {reply.status}: {reply.body}\n{coordinator}")
    return reply, int(reply.body["data"]["template_id"])


def _remove_leftovers(stack: Stack) -> None:
    """The cascade delete should leave the staging directory empty; say so and clean up if not."""
    staging = stack.base / "agents" / NODE / "staging"
    left = [p for p in staging.iterdir() if p.is_file()] if staging.is_dir() else []
    if left:
        names = ", ".join(p.name for p in left)
        print(f"  NOTE: left in {NODE}'s staging after the cascade delete (removed now): {names}", flush=True)
        for path in left:
            path.unlink()


def _one_rep(
    api: Api, stack: Stack, sshd: LocalSshd | None, storage_id: int, image: Path, pids: dict[str, int]
) -> Rep:
    size = image.stat().st_size
    ssh = None
    if sshd is not None:
        copy = image.with_name("ssh-copy.raw")
        warm_cache(image)
        ssh = sshd.copy(image, copy)
        copy.unlink()
        settle()
    warm_cache(image)
    name = f"bench-upload-{size_label(size).replace(' ', '')}-{secrets.token_hex(3)}"
    with ProcessWatch(pids) as watch:
        reply, template_id = _upload_once(stack, storage_id, image, name)
    # The import runs after the answer; let it finish so it does not steal CPU from the next rep.
    info = api.wait_import(template_id, timeout=300 + size / (20 * 10**6))
    if info["status"] != "imported":
        print(f"  NOTE: template {template_id} import {info['status']}: {info['error_message']}", flush=True)
    api.delete_cascade(template_id)
    _remove_leftovers(stack)
    settle()
    return Rep(ssh, reply, watch.own_cpu, watch.usage)


def _progress(run: SizeRun, rep: Rep, reps: int) -> None:
    ssh = "-" if rep.ssh is None else mb_per_s(run.size, rep.ssh.seconds)
    rss = ", ".join(f"{name} {mib(u.peak)} MiB" for name, u in rep.usage.items())
    print(
        f"  {run.label} rep {len(run.reps)}/{reps}: ssh {ssh} MB/s, "
        f"upload {mb_per_s(run.size, rep.upload.seconds)} MB/s; peak RSS {rss}",
        flush=True,
    )


def _cpu_table(runs: list[SizeRun], processes: list[str]) -> None:
    print("\n  CPU seconds per transfer, user+system, median (children reaped meanwhile included)")
    rows = []
    for run in runs:
        client, server = run.ssh_median("client_cpu"), run.ssh_median("server_cpu")
        rows.append(
            [
                run.label,
                "-" if client is None else f"{client:.2f}",
                "-" if server is None else f"{server:.2f}",
                f"{run.client_cpu:.2f}",
                *(f"{run.cpu(p):.2f}" for p in processes),
            ]
        )
    print(table(["size", "ssh client", "sshd+cat", "upload client", *processes], rows))


def _report(runs: list[SizeRun], idle: dict[str, int], reps: int) -> list[Target]:
    print(f"\n  throughput, median of {reps} (MB/s = 10^6 bytes/s; page cache warm for both)")
    rows = []
    for run in runs:
        ssh = run.ssh_seconds
        ratio = run.ratio
        rows.append(
            [
                run.label,
                "-" if ssh is None else f"{ssh:.2f}",
                "-" if ssh is None else mb_per_s(run.size, ssh),
                f"{run.upload_seconds:.2f}",
                mb_per_s(run.size, run.upload_seconds),
                f"{run.answer_wait:.2f}",
                "-" if ratio is None else f"{ratio:.2f}",
            ]
        )
    headers = ["size", "ssh s", "ssh MB/s", "upload s", "upload MB/s", "last byte->answer s", "upload/ssh"]
    print(table(headers, rows))
    _cpu_table(runs, list(idle))

    print(f"\n  memory (MiB): idle RSS before the first upload is the baseline; max over {reps} reps")
    rows = []
    for process, before in idle.items():
        for run in runs:
            rows.append(
                [
                    f"{process}, {run.label}",
                    mib(before),
                    mib(run.sampled(process)),
                    mib(run.hwm(process)),
                    mib(run.peak(process)),
                    f"{(run.peak(process) - before) / MIB:+.1f}",
                ]
            )
    print(table(["process, file", "idle RSS", "VmRSS max", "VmHWM", "peak", "peak - idle"], rows))
    resets = all(u.hwm_reset for run in runs for r in run.reps for u in r.usage.values())
    if not resets:
        print("  (VmHWM could not be reset before each upload: it is the peak since start-up)")

    targets: list[Target] = []
    for process in idle:
        for run in runs:
            peak = run.peak(process) / MIB
            targets.append(Target(f"{process} peak RSS, {run.label}", peak, "<=", RSS_LIMIT / MIB, "MiB"))
        small, large = runs[0], runs[-1]
        growth_name = f"{process} RSS growth, {large.label} minus {small.label}"
        if len(runs) < 2:
            targets.append(Target(growth_name, None, "<=", GROWTH_LIMIT / MIB, "MiB", "only one size ran"))
        else:
            growth = (large.peak(process) - small.peak(process)) / MIB
            targets.append(Target(growth_name, growth, "<=", GROWTH_LIMIT / MIB, "MiB"))
    for run in runs:
        note = "" if run.ratio is not None else "no sshd"
        targets.append(
            Target(f"throughput vs ssh, {run.label}", run.ratio, ">=", THROUGHPUT_RATIO, "x", note)
        )
    return targets


def run(options: Options) -> list[Target]:
    require_program("qemu-img", "qemu-utils", "the agents validate every image with it")
    sizes = _disk_plan(options.workdir, QUICK_SIZES if options.quick else SIZES)
    with contextlib.ExitStack() as exits:
        sshd = _start_sshd(options.workdir, exits)
        print("  starting the stack (emulator, 3 agents, coordinator on SQLite)", flush=True)
        stack = start_stack(options.workdir / "stack")
        exits.callback(stack.stop)
        assert stack.coordinator is not None
        api = Api(stack)
        storage_id = api.storage_id(api.node_id(NODE), STORAGE)
        pids = {"coordinator": stack.coordinator.pid, f"agent {NODE}": stack.agents[NODE].pid}
        idle = {name: proc_status(pid).get("VmRSS", 0) for name, pid in pids.items()}
        runs = []
        for size in sizes:
            image = options.workdir / f"bench-{size_label(size).replace(' ', '')}.raw"
            print(f"  writing {image.name}: {size_label(size)} of random bytes", flush=True)
            make_random_file(image, size)
            settle()
            size_run = SizeRun(size)
            for _ in range(options.reps):
                size_run.reps.append(_one_rep(api, stack, sshd, storage_id, image, pids))
                _progress(size_run, size_run.reps[-1], options.reps)
            image.unlink()
            runs.append(size_run)
    return _report(runs, idle, options.reps)


BENCHMARK = Benchmark(
    "upload",
    "POST /templates/upload of a raw image: peak RSS of coordinator and agent, throughput vs ssh",
    run,
)
