"""Progress from the recipe to the store, throttled, and the heartbeat thread that keeps the lease.

The recipe calls the progress callback with a ProgressEvent on every step (its rate and time
left computed where it is made, ia3app.jobtypes.ProgressEvent.train_step); writing each one would
cost a transaction per step, so :class:`ProgressWriter` writes at most one train event per
``min_interval_s`` and always the first and last step and every phase change. :class:`Heartbeat` extends the lease
every few seconds on its own connection and notices a cancel request or a lost lease.
"""

from __future__ import annotations

import ctypes
import logging
import math
import sqlite3
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import sqlite_utils

from ia3app.jobtypes import ProgressEvent
from jobs import queue
from storage.db import file_identity, open_db

log = logging.getLogger("jobs.worker")


class ProgressWriter:
    """The ``progress`` callback handed to the recipe for one job."""

    def __init__(self, db: sqlite_utils.Database | None, job_id: int, worker_id: str, total_steps: int | None,
                 min_interval_s: float = 0.5, write: Callable[[ProgressEvent], None] | None = None):
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
        self.last_event = time.monotonic()
        """When the recipe last reported anything (written or throttled): the heartbeat's stall clock."""

    @contextmanager
    def untimed(self) -> Iterator[None]:
        """The stall clock stands still inside (the worker's cold imports of torch and transformers, which
        report nothing) and starts again from the end: an import taking longer than the stall limit on a busy
        machine is not a stalled job."""
        self.last_event = math.inf
        try:
            yield
        finally:
            self.last_event = time.monotonic()

    def __call__(self, event: ProgressEvent) -> None:
        self.calls += 1
        self.last_event = time.monotonic()
        changed = event.phase != self.phase
        self.phase = event.phase
        now = time.monotonic()
        total = event.total_steps if event.total_steps is not None else self.total_steps
        last_step = event.step is not None and event.step == total
        if not (changed or last_step or event.phase != "train" or now - self._last_write >= self.min_interval_s):
            return
        self._write(event)
        self._last_write = now
        self.writes += 1


def stall_message(idle_s: float, phase: str, stall_s: float) -> str:
    """Why a job that reported nothing for ``idle_s`` was stopped (the local worker and the Ray dispatcher)."""
    return (f"no progress for {idle_s:.0f} s during '{phase}' (the limit without a progress event is {stall_s:g} s); "
            "the job was stopped — a slow template on a large file, a stuck model download or a hung device "
            "can cause this")


class JobInterrupted(BaseException):
    """Raised asynchronously in the job's thread when it did not stop by itself in time (cancel,
    shutdown, lost lease) or went too long without a progress event. A BaseException so that no
    `except Exception` in the recipe or a library swallows it; the worker catches it."""


ASK_FIRST_S = 1.0
"""How long an interrupt asks a render on the job's thread to stop by itself (through the render's trace hook,
cleanly) before it is raised asynchronously."""


def importing(frame: Any) -> bool:
    """Whether ``frame`` (a thread's innermost frame) is inside an import: a frame of importlib's bootstrap is
    on its stack (the module's own code runs under them). An exception raised asynchronously there leaves the
    module half-initialised: a cancel during a worker's first job raised JobInterrupted inside ``import torch``,
    left torch's operator registry half-filled, and every later job of that worker crashed ('Trying to
    override a python impl ... aten::broadcast_tensors', issue 23)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


class Heartbeat(threading.Thread):
    """Extends the job's lease every ``interval_s`` on its own connection, and watches the job.

    Every ``tick_s`` it reads the cancel flag; ``cancelled`` is set when the owner asked to cancel,
    ``lost`` when another worker took the job over. When a stop is wanted (cancel, lost lease, or
    ``stop_requested()``, the worker shutting down) and the job has not stopped by itself within
    ``grace_s``, the job's thread is interrupted (JobInterrupted, raised between two Python
    bytecodes: the validate and load phases have no should_stop checks of their own; never while the
    thread is importing, see :func:`importing` — the interrupt waits for the import to finish). When
    ``last_progress()`` is older than ``stall_s``, the job goes back to the queue with the reason (it
    resumes from its last checkpoint; after its last attempt it fails as 'stalled'), the lease is no
    longer renewed, and the job's thread is interrupted too (a job already being stopped is not checked
    for a stall).

    The stall clock is pause-aware: when two ticks of this thread are more than ``pause_s`` apart the
    whole process was not running (SIGSTOP, a suspended VM or laptop, a machine swapping), so the job
    could not report anything either; the idle time counts again from the moment it resumed.
    """

    def __init__(self, db_path: Path, job_id: int, worker_id: str, lease_s: float, interval_s: float, *,
                 tick_s: float = 1.0, grace_s: float = 2.0, stall_s: float | None = None,
                 last_progress: Callable[[], float] | None = None, phase: Callable[[], str] | None = None,
                 stop_requested: Callable[[], bool] = lambda: False, pause_s: float = 5.0):
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.db_path, self.job_id, self.worker_id = db_path, job_id, worker_id
        self.lease_s, self.interval_s = lease_s, interval_s
        self.tick_s, self.grace_s, self.stall_s = min(tick_s, interval_s), grace_s, stall_s
        self.last_progress, self.phase, self.stop_requested = last_progress, phase, stop_requested
        self.pause_s = pause_s
        self.resumed_at: float | None = None
        """When the process last came back from a pause (see the class doc); None: never paused."""
        self.paused_s = 0.0
        """Seconds the process was seen paused while this job ran."""
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self.stalled = threading.Event()
        self.stall_message = ""
        self.stall_outcome = ""
        """What the stall made of the job: 'queued' (resumes from its checkpoint), 'failed' (its last attempt)."""
        self.reason = ""
        """Why the job's thread was interrupted ('cancelled', 'lost', 'shutdown', 'stalled'); '' if it was not."""
        self.held_back = threading.Event()
        """Set when an interrupt waited because the job's thread was importing (see :func:`importing`)."""
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._target: int | None = None  # the job thread's id while it may be interrupted
        self._asked_at = 0.0  # when the interrupt was asked for (monotonic)
        self._stop_since: float | None = None

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """The job's thread runs the recipe inside: the heartbeat may interrupt it there, never outside.

        An interrupt raised asynchronously while the thread was leaving is raised at the thread's next check
        for one (a call's return, in the lines below), so it leaves through here as JobInterrupted: nothing is
        "cleared". Clearing it (PyThreadState_SetAsyncExc(id, NULL)) left CPython 3.11's eval breaker set for
        good (it signals even when clearing, and only raising an asynchronous exception unsignals it), and the
        next call under a trace function (every template render: render_limits.run_bounded) looped forever on
        its first instruction: the 'render spins after an interrupted job' bug (issue 21)."""
        from ia3app.templates.render_limits import STOP_REQUESTS

        me = threading.get_ident()
        with self._lock:
            self._target = me
        try:
            yield
        finally:
            with self._lock:
                self._target = None
                STOP_REQUESTS.pop(me, None)

    def _interrupt(self, reason: str) -> None:
        """Ask the job's thread to stop: a template render on it stops from its trace hook (cleanly) at once;
        if the thread is still in the recipe ASK_FIRST_S later, :meth:`_deliver` (on the next ticks) raises
        JobInterrupted in it asynchronously."""
        from ia3app.templates.render_limits import STOP_REQUESTS

        with self._lock:
            if self._target is None or self.reason:
                return
            self.reason = reason
            self._asked_at = time.monotonic()
            STOP_REQUESTS[self._target] = JobInterrupted
        log.warning("job %s: interrupting (%s)", self.job_id, reason)

    def _deliver(self, now: float) -> None:
        """Raise JobInterrupted in the job's thread, once ASK_FIRST_S has passed since it was asked to stop and
        while the thread is not importing (it waits for the import to end: tried again on the next tick)."""
        from ia3app.templates.render_limits import STOP_REQUESTS

        with self._lock:
            target = self._target
            if target is None or now - self._asked_at < ASK_FIRST_S:
                return
            if STOP_REQUESTS.pop(target, None) is None:  # a render raised it (cleanly): the thread is on its way
                STOP_REQUESTS[target] = JobInterrupted  # out; raised here only if it is still inside a while later
                self._asked_at = now
                return
            thread_id, exc = ctypes.c_ulong(target), ctypes.py_object(JobInterrupted)
            # the check and the raise back to back: the job's thread runs no Python code between them unless
            # this thread loses the GIL in the few bytecodes in between (a forced switch while it walks the
            # frames: a window of microseconds, not closed)
            if importing(sys._current_frames().get(target)):
                STOP_REQUESTS[target] = JobInterrupted  # still asked of a render the thread may start
                if not self.held_back.is_set():
                    self.held_back.set()
                    log.info("job %s: its thread is importing; the interrupt waits until the import is done",
                             self.job_id)
                return
            ctypes.pythonapi.PyThreadState_SetAsyncExc(thread_id, exc)
            self._target = None

    def run(self) -> None:
        db = open_db(self.db_path)
        ident = file_identity(self.db_path)
        next_beat = time.monotonic() + self.interval_s
        last_tick = time.monotonic()
        try:
            while not self._halt.wait(self.tick_s):
                now = time.monotonic()
                if self.reason:
                    self._deliver(now)
                if self.lost.is_set() or self.stalled.is_set():
                    continue  # the lease is no longer this job's: only the interrupt is left to deliver
                self.notice_pause(now - last_tick, now)
                last_tick = now
                if file_identity(self.db_path) != ident:  # deleted or replaced: stop writing into it
                    log.error("job %s: the database %s was deleted or replaced while the job ran; stopping it "
                              "(restore the data directory and restart the worker)", self.job_id, self.db_path)
                    self.lost.set()
                    self._interrupt("lost")
                    continue
                try:
                    if now >= next_beat:
                        next_beat = now + self.interval_s
                        if queue.heartbeat(db, self.job_id, self.worker_id, self.lease_s):
                            self.cancelled.set()
                    elif not self.cancelled.is_set() and queue.cancel_requested(db, self.job_id):
                        self.cancelled.set()
                except queue.LeaseLost:
                    log.warning("job %s: lease lost (another worker took it over); stopping", self.job_id)
                    self.lost.set()
                    self._interrupt("lost")
                    continue
                except sqlite3.OperationalError as exc:  # locked past the busy timeout: try again next beat
                    log.warning("job %s: heartbeat failed (%s); retrying", self.job_id, exc)
                if not self.reason and self._stalled(db, now):  # a job being stopped already is not a stall
                    continue
                self._escalate(now)
        finally:
            db.close()

    def _escalate(self, now: float) -> None:
        reason = "cancelled" if self.cancelled.is_set() else "shutdown" if self.stop_requested() else ""
        if not reason:
            self._stop_since = None
        elif self._stop_since is None:
            self._stop_since = now
        elif now - self._stop_since >= self.grace_s:
            self._interrupt(reason)

    def notice_pause(self, gap: float, now: float) -> None:
        if gap - self.tick_s > self.pause_s:
            paused = gap - self.tick_s
            self.paused_s += paused
            self.resumed_at = now
            log.warning("job %s: this process did not run for %.0f s (paused or starved); the stall clock "
                        "restarts now", self.job_id, paused)

    def idle_s(self, now: float) -> float:
        """Seconds without a progress event, not counting a pause of the whole process."""
        if self.last_progress is None:
            return 0.0
        since = self.last_progress()
        if self.resumed_at is not None:
            since = max(since, self.resumed_at)
        return now - since

    def _stalled(self, db: Any, now: float) -> bool:
        if self.stall_s is None or self.last_progress is None or self.idle_s(now) < self.stall_s:
            return False
        self.stall_message = stall_message(self.idle_s(now), self.phase() if self.phase else "?", self.stall_s)
        log.error("job %s: %s", self.job_id, self.stall_message)
        self.stalled.set()
        try:
            self.stall_outcome = queue.fail(db, self.job_id, self.worker_id, "stalled", self.stall_message
                                            + "; it goes back to the queue while attempts remain and resumes "
                                            "from its last checkpoint",
                                            retry=True)
        except (queue.LeaseLost, sqlite3.OperationalError) as exc:
            log.error("job %s: could not record the stall (%s)", self.job_id, exc)
        self._interrupt("stalled")
        return True

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=self.interval_s + 35)
