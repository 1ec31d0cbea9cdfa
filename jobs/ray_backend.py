"""The Ray backend's dispatcher: ``python -m jobs.ray_backend --address auto|HOST:PORT [--data-dir D]``.

It runs on the app's machine and is the only reader and writer of the database and the file
store; training runs on any node of a Ray cluster. Loop:

1. claim a queued job with the queue's own rules (lease, attempts), read its spec and rows
   (``jobs.worker.load_inputs``, owner-checked) and the job's work files (its last checkpoint);
2. submit :func:`jobs.ray_remote.run_attempt` with the resources its model needs
   (``jobs.ray_resources.plan``) — spec, rows and checkpoint travel as Ray objects;
3. drain the :class:`~jobs.ray_remote.Mailbox`: progress events go into the progress table,
   checkpoint files into ``checkpoints/<job>/`` as they are written on the node;
4. keep every held job's lease (heartbeat), and turn a cancel request into the attempt's stop
   flag (the node sees it within ``STOP_POLL_S``; ``ray.cancel`` after ``cancel_grace_s``); an
   attempt that sends nothing for ``stall_s`` fails its job as 'stalled', as the local worker's;
5. record each outcome: publish the adapter folder the node sent back and complete the job
   (``jobs.worker.finish``), or fail it as the local worker would (``jobs.worker.classify``: a
   crash, or a node dying under the job, is retried while attempts remain — the next attempt
   starts from the last checkpoint the app's machine holds; bad data, missing model and out of
   memory are not retried).

SIGTERM/SIGINT stop every attempt (each sends its final checkpoint), give the jobs back to the
queue and exit. If the dispatcher dies outright, Ray ends its tasks with it; their leases
expire and the next dispatcher resumes them from their checkpoints.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from ia3app.errors import UserError
from ia3app.jobtypes import ProgressEvent
from jobs import queue
from jobs.ray_remote import (AttemptFailed, AttemptOutcome, AttemptPayload, AttemptStarted, AttemptStopped,
                              AttemptSucceeded, Mailbox, MailboxEvent, WorkFile, read_tree, run_attempt, safe_relpath)
from jobs.progress import stall_message
from jobs.ray_resources import GPU_SHARE_STEP, Resources, fits, plan
from jobs.worker import watch_parent, classify, finish, load_inputs
from storage.db import data_dir as default_data_dir
from storage.db import open_db
from storage.files import FileStore

log = logging.getLogger("jobs.ray_backend")
ROOT = Path(__file__).resolve().parent.parent
SHIP_EXCLUDES = [".git", ".venv", "data", "tests", "bench", "examples", "**/__pycache__", "*.pt", "*.safetensors"]
"""What is not shipped to the nodes with the code (runtime_env working_dir)."""
_LOST = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError,
         ray.exceptions.OwnerDiedError, ray.exceptions.RaySystemError, ray.exceptions.LocalRayletDiedError,
         ray.exceptions.ActorDiedError)
_remote_attempt = ray.remote(max_retries=0)(run_attempt)


def connect(address: str, *, ship_code: bool = True) -> None:
    """Join the Ray cluster at ``address`` ('auto': the one started with ``ray start`` on this machine)."""
    if ray.is_initialized():
        return
    runtime_env = {"working_dir": str(ROOT), "excludes": SHIP_EXCLUDES} if ship_code else None
    try:
        ray.init(address=address, runtime_env=runtime_env, namespace="ia3app", logging_level=logging.WARNING,
                 log_to_driver=False)
    except ConnectionError as exc:
        raise UserError(f"could not join a Ray cluster at {address!r} ({exc}); start one on this machine with "
                        "`ray start --head`, or pass the head's address (HOST:6379)") from exc


@dataclass
class DispatcherConfig:
    data_dir: Path
    worker_id: str = ""
    """The queue's worker id for every job this dispatcher holds (default ray:host:pid)."""
    lease_s: float = queue.DEFAULT_LEASE_S
    heartbeat_s: float | None = None
    poll_s: float = 0.2
    """Seconds between drains of the mailbox (the latency of progress and cancel)."""
    progress_interval_s: float = 0.5
    gpu_memory_gb: float | None = None
    """Memory of the cluster's GPUs: lets small models share a GPU (see jobs.ray_resources)."""
    cpus_per_job: float = 1.0
    max_jobs: int | None = None
    """At most this many jobs at once (default: as many as the cluster has room for)."""
    cancel_grace_s: float = 5.0
    """After a stop request, seconds before the task is cancelled by Ray."""
    stall_s: float | None = 900.0
    """A running attempt that sends no event for this long is stopped and its job failed ('stalled'),
    as the local worker does (the clock starts when the task starts on a node, not while it waits)."""
    until_empty: bool = False
    """Return from serve() once the queue is empty and nothing runs."""

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.worker_id = self.worker_id or f"ray:{socket.gethostname()}:{os.getpid()}"
        if self.heartbeat_s is None:
            self.heartbeat_s = max(0.1, self.lease_s / 3)


@dataclass
class Attempt:
    job: queue.Job
    token: str
    ref: Any
    resources: Resources
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    last_event: float | None = None
    first_step: float | None = None
    node: str | None = None
    pid: int | None = None
    """The Ray worker process running the attempt (on its node)."""
    phase: str = "prepare"
    checkpoint_step: int | None = None
    stop_reason: str | None = None
    """'cancel', 'shutdown', 'lost' or 'stalled' once the dispatcher asked the attempt to stop."""
    stop_at: float | None = None
    killed: bool = False


class Dispatcher:
    def __init__(self, config: DispatcherConfig):
        self.config = config
        self.db = open_db(config.data_dir)
        self.store = FileStore(config.data_dir)
        self.shutdown = threading.Event()
        self.attempts: dict[int, Attempt] = {}
        self.history: list[dict[str, Any]] = []
        """One entry per ended attempt: job, attempt, node, outcome (for logs, tests and the bench)."""
        self.timings: list[dict[str, float]] = []
        """Per finished attempt: claim → first step, end to end (seconds); read by bench/bench_ray.py."""
        node = ray.get_runtime_context().get_node_id()
        here = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node_id=node, soft=False)
        self.mailbox = Mailbox.options(scheduling_strategy=here).remote()
        ray.get(self.mailbox.drain.remote())  # up before the first job is sent
        self._last_beat = self._last_stale = 0.0

    # ----- loop ------------------------------------------------------------------------------
    def serve(self) -> int:
        """Dispatch until shutdown (or, with until_empty, until nothing is queued or running)."""
        log.info("ray dispatcher %s on %s", self.config.worker_id, self.config.data_dir)
        done = 0
        while not self.shutdown.is_set():
            try:
                done += self.step()
            except sqlite3.OperationalError as exc:  # locked past the busy timeout: the queue is intact
                log.warning("the queue is busy (%s); trying again", exc)
            if self.config.until_empty and not self.attempts and not self._pending():
                break
        self.stop_all()
        self.close()
        return done

    def close(self) -> None:
        """End the mailbox actor (Ray would when this process exits)."""
        ray.kill(self.mailbox)

    def step(self) -> int:
        """One round: look after running attempts, claim new jobs, wait up to poll_s. Returns jobs ended."""
        now = time.monotonic()
        self._watch_cancels(now)  # heartbeats first: a slow round must not let our own leases look stale
        if now - self._last_stale >= 1.0:
            self._last_stale = now
            for job_id in queue.requeue_stale(self.db):
                log.warning("job %s: its worker stopped responding; requeued", job_id)
        ended = self._collect(self._ready(timeout=0))
        self._claim_more()
        return ended + self._collect(self._ready(timeout=self.config.poll_s))

    def _pending(self) -> bool:
        """Any job queued, or running anywhere (a dead dispatcher's job comes back when its lease expires)."""
        return self.db.execute("SELECT 1 FROM jobs WHERE (status = 'queued' AND cancel_requested = 0)"
                               " OR status = 'running' LIMIT 1").fetchone() is not None

    def _ready(self, timeout: float) -> list[Attempt]:
        if not self.attempts:
            if timeout:
                self.shutdown.wait(timeout)
            return []
        refs = {a.ref: a for a in self.attempts.values()}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        return [refs[r] for r in ready]

    # ----- claiming --------------------------------------------------------------------------
    def _claim_more(self) -> None:
        cfg = self.config
        while not self.shutdown.is_set():
            if cfg.max_jobs is not None and len(self.attempts) >= cfg.max_jobs:
                return
            if any(a.started is None for a in self.attempts.values()):
                return  # one job at a time waits for a place in Ray, the others stay in the queue
            if not fits(self._smallest_job(), ray.available_resources()):
                return
            job = queue.claim(self.db, cfg.worker_id, cfg.lease_s, kinds=("train",))  # suggest jobs: a local worker
            if job is None:
                return
            self._launch(job)

    def _smallest_job(self) -> Resources:
        """The least any job asks for: a CPU, and on a cluster with GPUs a GPU (or its smallest share)."""
        gpus = 0.0
        if ray.cluster_resources().get("GPU", 0) >= 1:
            gpus = GPU_SHARE_STEP if self.config.gpu_memory_gb is not None else 1.0
        return Resources(self.config.cpus_per_job, gpus, 0, None, 0)

    def _launch(self, job: queue.Job) -> None:
        cfg = self.config
        phase = "prepare"
        try:
            spec, train_rows, eval_rows = load_inputs(self.db, self.store, job)
            phase = "load"  # what the model needs: a model too big for the cluster's GPUs is a model error
            resources = plan(spec.model, ray.cluster_resources(), gpu_memory_gb=cfg.gpu_memory_gb,
                             cpus_per_job=cfg.cpus_per_job)
        except Exception as exc:
            kind, message, retry = classify(exc, phase, cfg.data_dir)
            log.info("job %s: %s", job.id, queue.fail(self.db, job.id, cfg.worker_id, kind, message, retry))
            return
        token = uuid.uuid4().hex
        payload = AttemptPayload(job.id, token, spec, train_rows, eval_rows,
                                 work_files=read_tree(self.store.checkpoint_dir(job.id)), device=resources.device,
                                 progress_interval_s=cfg.progress_interval_s)
        ref = _remote_attempt.options(name=f"ia3app-job-{job.id}", **resources.ray_options()).remote(
            payload, self.mailbox)
        self.attempts[job.id] = Attempt(job, token, ref, resources)
        log.info("job %s: attempt %s/%s sent to Ray (%s CPU, %s GPU, ~%.1f GB)", job.id, job.attempts,
                 job.max_attempts, resources.num_cpus, resources.num_gpus, resources.need_gb)

    # ----- running attempts ------------------------------------------------------------------
    def _watch_cancels(self, now: float) -> None:
        cfg = self.config
        if now - self._last_beat >= cfg.heartbeat_s:
            self._last_beat = now
            for att in list(self.attempts.values()):
                try:
                    if queue.heartbeat(self.db, att.job.id, cfg.worker_id, cfg.lease_s):
                        self._stop(att, "cancel")
                except queue.LeaseLost:
                    log.warning("job %s: lease lost (another dispatcher holds it); stopping it here", att.job.id)
                    self._stop(att, "lost")
        for job_id in queue.cancel_requests(self.db, cfg.worker_id) & set(self.attempts):
            self._stop(self.attempts[job_id], "cancel")
        for att in list(self.attempts.values()):
            if cfg.stall_s is not None and att.stop_reason is None and att.last_event is not None \
                    and now - att.last_event >= cfg.stall_s:
                self._stall(att, now)
        for att in self.attempts.values():
            if att.stop_at is not None and not att.killed and now - att.stop_at > cfg.cancel_grace_s \
                    and att.stop_reason != "shutdown":
                log.warning("job %s: did not stop within %.0f s; cancelling its Ray task", att.job.id,
                            cfg.cancel_grace_s)
                ray.cancel(att.ref, force=True)
                att.killed = True
        self._drain()

    def _stall(self, att: Attempt, now: float) -> None:
        message = stall_message(now - att.last_event, att.phase, self.config.stall_s)
        log.error("job %s: %s", att.job.id, message)
        try:
            queue.fail(self.db, att.job.id, self.config.worker_id, "stalled", message, retry=False)
        except queue.LeaseLost:
            pass
        self._stop(att, "stalled")

    def _stop(self, att: Attempt, reason: str) -> None:
        if att.stop_reason is None:
            att.stop_reason, att.stop_at = reason, time.monotonic()
            self.mailbox.stop.remote(att.token)

    def _drain(self) -> None:
        for job_id, token, event in ray.get(self.mailbox.drain.remote()):
            att = self.attempts.get(job_id)
            if att is None or att.token != token:
                continue  # a straggler of an earlier attempt
            try:
                self._event(att, event)
            except queue.LeaseLost:
                self._stop(att, "lost")

    def _event(self, att: Attempt, event: MailboxEvent) -> None:
        job_id = att.job.id
        att.last_event = time.monotonic()
        if isinstance(event, AttemptStarted):
            att.started, att.node, att.pid = time.monotonic(), event.node, event.pid
            log.info("job %s: running on node %s (%s pid %s)", job_id, event.node[:12], event.host, event.pid)
        elif isinstance(event, ProgressEvent):
            att.phase = event.phase
            if att.first_step is None and att.phase == "train":
                att.first_step = time.monotonic()
            if att.stop_reason != "lost":
                queue.report_progress(self.db, job_id, self.config.worker_id, event)
        elif isinstance(event, WorkFile):
            target = self.store.checkpoint_dir(job_id) / safe_relpath(event.path)
            self.store.write_bytes(self.store.relpath(target), event.data)
            att.checkpoint_step = event.step
        else:
            log.warning("job %s: unknown event %r from its Ray task", job_id, type(event).__name__)

    # ----- outcomes --------------------------------------------------------------------------
    def _collect(self, ready: list[Attempt]) -> int:
        if not ready:
            return 0
        self._drain()  # every post of a finished attempt landed before its result was returned
        for att in ready:
            self.attempts.pop(att.job.id, None)
            self.mailbox.forget.remote(att.token)
            try:
                outcome = self._outcome(att)
            except queue.LeaseLost:
                outcome = "abandoned (lease lost)"
            self.history.append({"job": att.job.id, "attempt": att.job.attempts, "node": att.node,
                                 "outcome": outcome})
            log.info("job %s: %s", att.job.id, outcome)
        return len(ready)

    def _outcome(self, att: Attempt) -> str:
        cfg, job = self.config, att.job
        if att.stop_reason == "lost":
            return "abandoned (lease lost)"
        if att.stop_reason == "stalled":
            return "failed (stalled)"
        out = self._read_outcome(att)
        if isinstance(out, AttemptSucceeded):
            self._publish(job.id, out.adapter)
            finish(self.db, self.store, job, cfg.worker_id, out.result)
            self._time(att)
            return "succeeded"
        if isinstance(out, AttemptStopped):
            if att.stop_reason == "cancel":
                queue.mark_cancelled(self.db, job.id, cfg.worker_id)
                return "cancelled"
            if att.stop_reason == "shutdown":
                queue.release(self.db, job.id, cfg.worker_id)
                return "given back to the queue (dispatcher shutting down)"
            out = AttemptFailed("crash", "the Ray task stopped without being asked to", True)
        new = queue.fail(self.db, job.id, cfg.worker_id, out.kind, out.message, out.retry)
        return f"{new} ({out.kind}: {out.message})"

    def _read_outcome(self, att: Attempt) -> AttemptOutcome:
        """What the attempt returned, or what its end means when Ray raised instead (cancelled, the node or
        worker died, an error outside run_attempt's own handling)."""
        try:
            return ray.get(att.ref)
        except ray.exceptions.TaskCancelledError:
            return AttemptStopped()
        except _LOST as exc:
            if att.stop_reason == "cancel":
                return AttemptStopped()
            where = f"from step {att.checkpoint_step}" if att.checkpoint_step else "from the start"
            return AttemptFailed("lost", f"the Ray node or worker running this job died ({type(exc).__name__}); "
                                         f"it is retried and resumes {where}", True)
        except ray.exceptions.RayTaskError as exc:
            return AttemptFailed(*classify(exc.cause or exc, att.phase, self.config.data_dir))
        except ray.exceptions.RayError as exc:
            return AttemptFailed(*classify(exc, att.phase, self.config.data_dir))

    def _publish(self, job_id: int, files: dict[str, bytes]) -> None:
        """Write the adapter folder the node sent back; ia3_config.json last (its presence marks it complete)."""
        folder = self.store.adapter_dir(job_id)
        self.store.remove(self.store.relpath(folder))  # nothing left over from an earlier attempt
        for relpath in sorted(files, key=lambda p: (p == "ia3_config.json", p)):
            self.store.write_bytes(self.store.relpath(folder / safe_relpath(relpath)), files[relpath])

    def _time(self, att: Attempt) -> None:
        now = time.monotonic()
        self.timings.append({"claim_to_start_s": (att.started or now) - att.submitted,
                             "claim_to_first_step_s": (att.first_step or now) - att.submitted,
                             "end_to_end_s": now - att.submitted})

    def stop_all(self, timeout_s: float = 10.0) -> None:
        """Stop every attempt (each sends its last checkpoint) and give its job back to the queue."""
        if not self.attempts:
            return
        for att in self.attempts.values():
            self._stop(att, "shutdown")
        deadline = time.monotonic() + timeout_s
        while self.attempts and time.monotonic() < deadline:
            self._drain()
            self._collect(self._ready(timeout=0.2))
        for att in list(self.attempts.values()):  # did not answer in time: their checkpoints are what we have
            try:
                queue.release(self.db, att.job.id, self.config.worker_id)
            except queue.LeaseLost:
                pass
            ray.cancel(att.ref, force=True)
            self.attempts.pop(att.job.id)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.ray_backend",
                                description="Run queued ia3app jobs on a Ray cluster (this machine keeps the data).")
    p.add_argument("--address", default=os.environ.get("IA3APP_RAY") or "auto",
                   help="Ray cluster: 'auto' (the one `ray start --head` began here) or HOST:PORT; default $IA3APP_RAY")
    p.add_argument("--data-dir", type=Path, default=None, help="default: $IA3APP_DATA_DIR or ./data")
    p.add_argument("--lease-s", type=float, default=queue.DEFAULT_LEASE_S)
    p.add_argument("--poll-s", type=float, default=0.2)
    p.add_argument("--progress-interval-s", type=float, default=0.5)
    p.add_argument("--gpu-memory-gb", type=float, default=None,
                   help="memory of the cluster's GPUs: small models then share a GPU (default: a whole GPU per job)")
    p.add_argument("--cpus-per-job", type=float, default=1.0)
    p.add_argument("--max-jobs", type=int, default=None, help="at most this many jobs at once")
    p.add_argument("--stall-s", type=float, default=900.0,
                   help="fail a job that reports no progress for this many seconds (default 900)")
    p.add_argument("--until-empty", action="store_true", help="exit once nothing is queued or running")
    p.add_argument("--no-ship-code", action="store_true",
                   help="do not send this checkout to the nodes (they have the same one on the same path)")
    p.add_argument("--exit-with-parent", type=int, default=None, metavar="PID")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s [ray-dispatcher %(process)d] %(message)s")
    try:
        connect(args.address, ship_code=not args.no_ship_code)
        dispatcher = Dispatcher(DispatcherConfig(
            data_dir=args.data_dir or default_data_dir(), lease_s=args.lease_s, poll_s=args.poll_s,
            progress_interval_s=args.progress_interval_s, gpu_memory_gb=args.gpu_memory_gb,
            cpus_per_job=args.cpus_per_job, max_jobs=args.max_jobs, until_empty=args.until_empty,
            stall_s=args.stall_s))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def on_signal(signum, _frame):
        log.info("signal %s: stopping (running jobs go back to the queue with their checkpoints)", signum)
        dispatcher.shutdown.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.exit_with_parent is not None:
        threading.Thread(target=watch_parent, args=(args.exit_with_parent, dispatcher.shutdown), daemon=True).start()
    dispatcher.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
