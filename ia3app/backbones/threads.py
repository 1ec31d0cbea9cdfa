"""How many CPU threads torch uses: one policy for training and one for the serving batcher.

Measured on the 2-core machine this project runs on, shared with other work (bench/bench_threads.py,
bench/RESULTS.md "CPU threads"): one torch thread beat two for every training step and serving batch,
by 1.5-3× for training and 2-8× for serving (a second thread waits for a core someone else holds, and
a serving batch is too small to split). So:

- **training** (the worker's job thread): ``IA3APP_TRAIN_THREADS``, default every core but one (the
  other is left to the web process, the serving batcher and the heartbeat): 1 on a 2-core machine;
  ``OMP_NUM_THREADS`` instead where it is set (a Ray task gets its CPU count there);
- **serving** (the batcher thread of each backbone): ``IA3APP_SERVE_THREADS``, default 1;
- inter-op threads are left as torch sets them: nothing on these paths uses torch's inter-op pool
  (only ``torch.jit.fork`` and async ops do).

torch's thread count is per thread (OpenMP / MKL settings of the calling thread; threads started later
take the last value set), so each role sets it in the thread that runs it.
"""

from __future__ import annotations

import os

from ia3app.errors import UserError

ENV = {"train": "IA3APP_TRAIN_THREADS", "serve": "IA3APP_SERVE_THREADS"}


def default_threads(role: str, cores: int | None = None) -> int:
    if role != "train":
        return 1
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:  # a scheduler sized this process (Ray: its task's CPUs)
        return int(omp)
    cores = cores or os.cpu_count() or 1
    return max(1, cores - 1)


def cpu_threads(role: str) -> int:
    """The torch intra-op threads for `role` ('train' or 'serve'): its setting, else the default."""
    name = ENV[role]
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default_threads(role)
    if not raw.isdigit() or int(raw) < 1:
        raise UserError(f"{name} must be a whole number of threads, at least 1 (got {raw!r})")
    return int(raw)


def use_threads(role: str) -> int:
    """Set this thread's torch intra-op threads for `role`; returns the number."""
    import torch

    n = cpu_threads(role)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
