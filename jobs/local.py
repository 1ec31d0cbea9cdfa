"""The web app's job runner: a ``python -m jobs.worker`` subprocess (or, with ``--ray``, the Ray
dispatcher ``python -m jobs.ray_backend``), stopped when the app exits.

The worker's output goes to ``<data dir>/logs/worker.log`` (a file, never a pipe nobody drains:
a full pipe would stall training). Stopping sends SIGTERM, so the worker gives its running job
back to the queue (it resumes from its last checkpoint), then SIGKILL after a timeout.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class LocalWorker:
    """Handle on a worker subprocess."""

    def __init__(self, proc: subprocess.Popen, log_path: Path):
        self.proc = proc
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL; returns the exit code. Safe to call twice."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        atexit.unregister(self.stop)
        return self.proc.returncode


def start_local_worker(data_dir: str | Path, *, gpu: int | None = None, poll_s: float = 1.0,
                       lease_s: float | None = None, extra_args: list[str] | None = None) -> LocalWorker:
    """Start ``python -m jobs.worker`` on ``data_dir``; it is stopped at interpreter exit."""
    args = ["--poll-s", str(poll_s)]
    if gpu is not None:
        args += ["--gpu", str(gpu)]
    if lease_s is not None:
        args += ["--lease-s", str(lease_s)]
    return _start("jobs.worker", data_dir, "worker.log", args + (extra_args or []))


def start_ray_dispatcher(data_dir: str | Path, address: str, *, extra_args: list[str] | None = None) -> LocalWorker:
    """Start ``python -m jobs.ray_backend`` (jobs run on the Ray cluster at ``address``); stopped at exit.

    Its log is ``<data dir>/logs/ray-dispatcher.log``; SIGTERM stops the running attempts, which
    send their last checkpoint, and gives their jobs back to the queue.
    """
    return _start("jobs.ray_backend", data_dir, "ray-dispatcher.log", ["--address", address, *(extra_args or [])])


def _start(module: str, data_dir: str | Path, log_name: str, args: list[str]) -> LocalWorker:
    data_dir = Path(data_dir).resolve()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / log_name
    cmd = [sys.executable, "-m", module, "--data-dir", str(data_dir),
           "--exit-with-parent", str(os.getpid()), *args]  # no orphan worker if the app dies without atexit
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=subprocess.STDOUT)
    worker = LocalWorker(proc, log_path)
    atexit.register(worker.stop)
    return worker
