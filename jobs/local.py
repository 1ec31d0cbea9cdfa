"""The web app's local worker: one ``python -m jobs.worker`` subprocess, stopped when the app exits.

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
    data_dir = Path(data_dir).resolve()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / "worker.log"
    cmd = [sys.executable, "-m", "jobs.worker", "--data-dir", str(data_dir), "--poll-s", str(poll_s),
           "--exit-with-parent", str(os.getpid())]  # no orphan worker if the app dies without atexit
    if gpu is not None:
        cmd += ["--gpu", str(gpu)]
    if lease_s is not None:
        cmd += ["--lease-s", str(lease_s)]
    cmd += extra_args or []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=subprocess.STDOUT)
    worker = LocalWorker(proc, log_path)
    atexit.register(worker.stop)
    return worker
