"""``python -m benchmarks [--list] [--quick] [NAME ...]``: run benchmarks, print figures and targets.

Every benchmark prints its figures, the baseline measured in the same run and one line
per target (PASS, MISS, or SKIP when something it needs is missing). A missed target
does not change the exit status; a benchmark that breaks does (exit 1).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks import (
    api,
    events,
    sync_compression,
    sync_fanout,
    sync_loopback,
    sync_receiver,
    sync_versions,
    upload,
)
from benchmarks.base import Benchmark, Options, Skip
from benchmarks.report import Target

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        upload.BENCHMARK,
        sync_loopback.BENCHMARK,
        sync_receiver.BENCHMARK,
        sync_fanout.BENCHMARK,
        sync_versions.BENCHMARK,
        sync_compression.BENCHMARK,
        api.BENCHMARK,
        events.BENCHMARK,
    )
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run the speed and memory benchmarks; each prints its figures, the baseline "
        "measured in the same run and PASS/MISS per target. Missed targets do not fail the run.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run of a few minutes")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per measurement (median; default 3)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the temporary files go (default: the system's temp dir); needs room for "
        "4 copies of the largest file",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) afterwards")
    return parser


def _run_one(bench: Benchmark, args: argparse.Namespace) -> tuple[list[Target], str | None]:
    """(targets, error); a Skip gives no targets and no error."""
    base = args.workdir.resolve() if args.workdir else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"pvesphere-bench-{bench.name}-", dir=base))
    options = Options(quick=args.quick, reps=args.reps, workdir=workdir, keep=args.keep)
    started = time.monotonic()
    try:
        targets = bench.run(options)
    except Skip as exc:
        print(f"  SKIP {bench.name}: {exc}", flush=True)
        return [], None
    except Exception as exc:
        traceback.print_exc()
        return [], f"{exc.__class__.__name__}: {exc}"
    else:
        print("\n  targets")
        for target in targets:
            print("  " + target.line())
        return targets, None
    finally:
        print(f"  ({bench.name} took {time.monotonic() - started:.0f}s; work dir {workdir}", end="")
        if args.keep:
            print(", kept)", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            print(", removed)", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for bench in BENCHMARKS.values():
            print(f"{bench.name:14} {bench.summary}")
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        _parser().error(f"unknown benchmark(s) {', '.join(unknown)}; --list shows them")
    if args.reps < 1:
        _parser().error("--reps must be at least 1")
    selected = [BENCHMARKS[n] for n in args.names] or list(BENCHMARKS.values())

    summary: list[tuple[str, Target]] = []
    errors: list[str] = []
    for bench in selected:
        print(f"== {bench.name}{' (quick)' if args.quick else ''}: {bench.summary}", flush=True)
        targets, error = _run_one(bench, args)
        if error is not None:
            errors.append(f"ERROR {bench.name}: {error}")
        summary.extend((bench.name, target) for target in targets)
        print(flush=True)

    print("== summary")
    for name, target in summary:
        print(target.line(prefix=f"{name}: "))
    for error in errors:
        print(error)
    verdicts = [t.verdict for _, t in summary]
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in ("PASS", "MISS", "SKIP"))
    print(f"{len(verdicts)} targets: {counts}; {len(errors)} benchmark(s) broke")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
