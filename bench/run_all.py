"""Run every CPU benchmark once, briefly, one after the other (what ``make bench`` runs).

    python -m bench.run_all            # brief settings: a few minutes on a 2-core CPU
    python -m bench.run_all --full     # each benchmark's own defaults (the runs in bench/RESULTS.md)
    python -m bench.run_all --only bench_queue bench_render

Each benchmark runs in its own process (as ``python -m bench.NAME ...``), prints its own
side-by-side table, and this script ends with one line per benchmark: its wall time and whether
it succeeded; the exit status is 1 when any failed. The GPU scripts (bench/gpu.py,
bench/gpu_compile.py) need CUDA and bench/bench_ray.py a Ray runtime: they are not run here. Record figures worth keeping, with date,
machine and command, in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BRIEF: dict[str, list[str]] = {
    "bench_queue": ["--steps", "4", "--claims", "50", "--writes", "100"],
    "bench_render": ["--rows", "500"],
    "bench_scoring": ["--shape", "tiny", "--examples", "8", "--repeats", "1"],
    "bench_training": ["--shape", "tiny", "--steps", "2", "--recipe-steps", "2"],
    "bench_adapters": ["--quick", "--reps", "2"],
    "bench_icl": ["--sizes", "tiny", "--queries", "2"],
    "bench_job": ["--steps", "6", "--rounds", "1"],
    "bench_step": ["--shape", "tiny", "--steps", "3", "--rounds", "1"],
    "bench_serving": ["--quick"],
    "bench_upload": [],
    "bench_estimate": ["--quick"],
    "bench_threads": ["--model", "tiny", "--rounds", "1", "--steps", "2"],
    "bench_merge_tolerance": ["--adapters", "1"],
}
"""Every CPU benchmark with its brief arguments (a new benchmark belongs here too)."""


def run(name: str, args: list[str]) -> tuple[int, float]:
    command = [sys.executable, "-m", f"bench.{name}", *args]
    print(f"\n===== {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    code = subprocess.run(command, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}).returncode
    return code, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="each benchmark's default settings, not the brief ones")
    parser.add_argument("--only", nargs="*", choices=sorted(BRIEF), help="run these benchmarks only")
    args = parser.parse_args(argv)
    names = args.only or list(BRIEF)
    outcomes = {name: run(name, [] if args.full else BRIEF[name]) for name in names}
    print("\n===== summary")
    for name, (code, wall) in outcomes.items():
        print(f"{name:<16}{'ok' if code == 0 else f'FAILED (exit {code})':<18}{wall:8.1f} s")
    return 0 if all(code == 0 for code, _ in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
