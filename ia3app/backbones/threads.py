"""How many CPU threads torch uses: one policy for training and one for the serving batcher.

Measured on the 2-core machine this project runs on (bench/bench_threads.py, bench/RESULTS.md "CPU
threads"): whether a second thread pays depends on whether a core is free. On a quiet machine two
threads trained the real model 1.65× faster than one (1.56 vs 2.57 s a step) and served an 8-row batch
1.6× faster; with the cores busy (load average 3-9), one thread beat two by 1.5-3× for training and
2-8× for serving (a second thread waits for a core someone else holds). So:

- **training** (the worker's job thread): ``IA3APP_TRAIN_THREADS``; else ``OMP_NUM_THREADS`` where it
  is set (a Ray task gets its CPU count there); else the cores that are idle when the job starts
  (sampled from /proc/stat over a quarter of a second; the 1-minute load average where /proc/stat is
  missing), at least 1: both cores of a quiet 2-core machine, one when something else runs;
- **serving** (the batcher thread of each backbone): ``IA3APP_SERVE_THREADS``, default 1 — a batcher
  usually shares the machine with a training job, where one thread wins by far, and a small batch is
  too small to split;
- inter-op threads are left as torch sets them: nothing on these paths uses torch's inter-op pool
  (only ``torch.jit.fork`` and async ops do).

torch's thread count is per thread (OpenMP / MKL settings of the calling thread; threads started later
take the last value set), so each role sets it in the thread that runs it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ia3app.errors import UserError

ENV = {"train": "IA3APP_TRAIN_THREADS", "serve": "IA3APP_SERVE_THREADS"}


def _cpu_times() -> tuple[float, float] | None:
    """(idle, total) jiffies of all CPUs from /proc/stat, or None where it cannot be read (not Linux)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [float(v) for v in fields[1:]]
    return values[3] + (values[4] if len(values) > 4 else 0.0), sum(values)  # idle + iowait, all


def idle_cores(cores: int, sample_s: float = 0.25) -> float:
    """How many of `cores` are idle now: /proc/stat sampled over `sample_s`, else cores minus the 1-minute
    load average."""
    first = _cpu_times()
    if first is not None:
        time.sleep(sample_s)
        second = _cpu_times()
        if second is not None and second[1] > first[1]:
            return cores * (second[0] - first[0]) / (second[1] - first[1])
    return cores - os.getloadavg()[0]


def default_threads(role: str, cores: int | None = None, idle: float | None = None) -> int:
    """The default for `role`; for training, `idle` (measured when not given) is how many cores are free."""
    if role != "train":
        return 1
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:  # a scheduler sized this process (Ray: its task's CPUs)
        return int(omp)
    cores = cores or os.cpu_count() or 1
    if idle is None:
        idle = idle_cores(cores)
    return max(1, min(cores, int(idle + 0.5)))  # 1.6 idle of 2 -> 2; 1.4 -> 1


def cpu_threads(role: str) -> int:
    """The torch intra-op threads for `role` ('train' or 'serve'): its setting, else the default."""
    name = ENV[role]
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default_threads(role)
    if not raw.isdigit() or int(raw) < 1:
        raise UserError(f"{name} must be a whole number of threads, at least 1 (got {raw!r})")
    return int(raw)


THREADS_FILE = "threads.txt"
"""In a job's work folder: the training threads its first attempt chose (see use_threads)."""


def use_threads(role: str, remember: Path | None = None) -> int:
    """Set this thread's torch intra-op threads for `role`; returns the number.

    With `remember` (a job's work folder), the default is chosen once per job and kept there: a resumed
    job computes with the count its first attempt chose even if the machine got busier or quieter since,
    because a different count can change the order of floating-point sums, and a resume is
    byte-identical to an uninterrupted run only with the same one. An explicit setting always wins."""
    import torch

    kept = remember / THREADS_FILE if remember is not None else None
    if kept is not None and not os.environ.get(ENV[role], "").strip() and kept.is_file():
        text = kept.read_text().strip()
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{kept}: expected a whole number of threads, found {text!r}")
        n = int(text)
    else:
        n = cpu_threads(role)
        if kept is not None:
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.write_text(f"{n}\n")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
