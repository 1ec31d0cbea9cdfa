"""Progress from the recipe to the store, throttled, and the heartbeat thread that keeps the lease.

The recipe calls the progress callback on every step; writing each one would cost a transaction
per step, so :class:`ProgressWriter` writes at most one train event per ``min_interval_s`` and
always the first and last step and every phase change. :class:`Heartbeat` extends the lease
every few seconds on its own connection and notices a cancel request or a lost lease.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

import sqlite_utils

from jobs import queue
from storage.db import open_db

log = logging.getLogger("jobs.worker")


class ProgressWriter:
    """The ``progress`` callback handed to the recipe for one job."""

    def __init__(self, db: sqlite_utils.Database | None, job_id: int, worker_id: str, total_steps: int | None,
                 min_interval_s: float = 0.5, write: Callable[[dict[str, Any]], None] | None = None):
        """``write`` receives each event that passes the throttle (default: the job's progress table;
        the Ray backend passes one that sends the event back to its dispatcher instead)."""
        self.db, self.job_id, self.worker_id = db, job_id, worker_id
        self._write = write or (lambda event: queue.report_progress(db, job_id, worker_id, event))
        self.total_steps = total_steps
        self.min_interval_s = min_interval_s
        self.phase = "prepare"
        self.writes = 0
        self.calls = 0
        self._last_write = 0.0
        self._started = time.monotonic()
        self._first_step: tuple[int, float] | None = None  # (step, time) of the first step of this run

    def __call__(self, event: dict[str, Any]) -> None:
        self.calls += 1
        event = dict(event)
        phase = event.get("phase") or self.phase
        event["phase"] = phase
        changed = phase != self.phase
        self.phase = phase
        now = time.monotonic()
        step = event.get("step")
        if phase == "train" and isinstance(step, int):
            if event.get("total_steps") is None:
                event["total_steps"] = self.total_steps
            self._fill_timing(event, step, now)
        last_step = isinstance(step, int) and step == event.get("total_steps")
        if not (changed or last_step or phase != "train" or now - self._last_write >= self.min_interval_s):
            return
        self._write(event)
        self._last_write = now
        self.writes += 1

    def _fill_timing(self, event: dict[str, Any], step: int, now: float) -> None:
        event.setdefault("elapsed_s", now - self._started)
        if self._first_step is None:
            self._first_step = (step, now)
            return
        first_step, first_time = self._first_step
        done = step - first_step
        total = event.get("total_steps")
        if done > 0 and event.get("eta_s") is None and isinstance(total, int):
            event["eta_s"] = (now - first_time) / done * max(total - step, 0)


class Heartbeat(threading.Thread):
    """Extends the job's lease every ``interval_s`` on its own connection.

    ``cancelled`` is set when the owner asked to cancel, ``lost`` when another worker took the
    job over (this one was presumed dead); the worker's should_stop() reads both.
    """

    def __init__(self, db_path: Path, job_id: int, worker_id: str, lease_s: float, interval_s: float):
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.db_path, self.job_id, self.worker_id = db_path, job_id, worker_id
        self.lease_s, self.interval_s = lease_s, interval_s
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        db = open_db(self.db_path)
        try:
            while not self._halt.wait(self.interval_s):
                try:
                    if queue.heartbeat(db, self.job_id, self.worker_id, self.lease_s):
                        self.cancelled.set()
                except queue.LeaseLost:
                    log.warning("job %s: lease lost (another worker took it over); stopping", self.job_id)
                    self.lost.set()
                    return
                except sqlite3.OperationalError as exc:  # locked past the busy timeout: try again next beat
                    log.warning("job %s: heartbeat failed (%s); retrying", self.job_id, exc)
        finally:
            db.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=self.interval_s + 35)
