"""The job worker: ``python -m jobs.worker [--data-dir D] [--gpu N] [--once] [--poll-s S] [--lease-s S]``.

Loop: requeue jobs whose worker died (expired lease), claim one job, run the recipe on it in
this process (``ia3app.recipe.run_job.run_job``) while a heartbeat thread keeps the lease, write
progress to the store, then record the job's JobResult — or a failure worded
for a person. One worker per GPU (``--gpu N`` sets CUDA_VISIBLE_DEVICES before torch loads);
CPU when there is none. SIGTERM/SIGINT give the running job back to the queue (it resumes
from its last checkpoint) and exit.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import socket
import sqlite3
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

from ia3app.errors import UserError
from ia3app.jobtypes import JOB_KINDS, JobRequest, JobResult, JobSpec, ProgressEvent, SuggestResult
from jobs import queue
from jobs.progress import Heartbeat, JobInterrupted, ProgressWriter
from storage import repo
from storage.db import DB_FILENAME, corrupt_database, data_dir, file_identity, open_db, replaced_database, vanished_database
from storage.files import FileStore, StorageError, is_disk_error, storage_error

log = logging.getLogger("jobs.worker")


@dataclass
class WorkerConfig:
    data_dir: Path
    """The app's data directory (database + files)."""
    worker_id: str = ""
    """Unique per process; defaults to host:pid[:gpuN]."""
    lease_s: float = queue.DEFAULT_LEASE_S
    """A job whose heartbeat is older than this is presumed lost and requeued."""
    heartbeat_s: float | None = None
    """Seconds between heartbeats (default lease_s / 3)."""
    poll_s: float = 1.0
    """Seconds between looks at an empty queue."""
    progress_interval_s: float = 0.5
    """At most one training-progress write per this many seconds (plus first/last step, phase changes)."""
    once: bool = False
    """Run at most one job, then exit."""
    until_empty: bool = False
    """Exit when the queue is empty instead of waiting for more jobs."""
    device: str | None = None
    """Passed to the recipe's model loader (None: GPU if there is one, else CPU)."""
    stall_s: float = 900.0
    """A job with no progress event for this long (a pause of the whole process not counted) goes back to
    the queue ('stalled'; it resumes from its checkpoint, and fails after its last attempt)."""
    cancel_grace_s: float = 2.0
    """After a cancel (or shutdown) the job may stop by itself this long before it is interrupted."""
    kinds: tuple[str, ...] = JOB_KINDS
    """Which kinds of job this worker claims (with the Ray backend the app runs one for 'suggest' only)."""
    cancel_poll_s: float = 0.2
    """Seconds between reads of the job's cancel flag (one indexed SQLite read): a cancel waited up to a
    whole second here before the job even heard of it (bench/bench_cancel.py measures both)."""

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.worker_id = self.worker_id or f"{socket.gethostname()}:{os.getpid()}"
        if self.heartbeat_s is None:
            self.heartbeat_s = max(0.1, self.lease_s / 3)


class Worker:
    def __init__(self, config: WorkerConfig):
        self.config = config
        self.db = open_db(config.data_dir)
        self._db_ident = file_identity(config.data_dir)
        self._fault: str | None = None  # the storage fault last logged (each is logged once)
        self.store = FileStore(config.data_dir)
        self.shutdown = threading.Event()
        """Set by SIGTERM/SIGINT: stop the current job (give it back) and exit."""
        self.models = None
        """ia3app.backbones.cache.ModelCache: the last job's loaded (compiled) backbone, reused by the next
        job of the same model (created on the first job: importing it here would load torch early)."""
        self.engine = None
        """ia3app.serving.engine.ServingEngine that scores pools for suggest jobs (created on the first one,
        kept for the next: its backbone and the adapters stay loaded)."""

    def serve(self) -> int:
        """Claim and run jobs until told to stop; returns how many jobs it ran."""
        cfg, ran = self.config, 0
        log.info("worker %s watching %s", cfg.worker_id, cfg.data_dir)
        while not self.shutdown.is_set():
            try:
                self._check_db_file()
                for job_id in queue.requeue_stale(self.db):
                    log.warning("job %s: its worker stopped responding; requeued", job_id)
                job = queue.claim(self.db, cfg.worker_id, cfg.lease_s, kinds=cfg.kinds)
            except (sqlite3.DatabaseError, StorageError) as exc:
                self._storage_fault(exc)
                self.shutdown.wait(max(cfg.poll_s, 1.0))
                continue
            if self._fault is not None:
                log.info("the database is usable again")
                self._fault = None
            if job is None and self.run_probe():
                continue
            if job is None:
                if cfg.once or cfg.until_empty:
                    break
                self.shutdown.wait(cfg.poll_s)
                continue
            self.run_one(job)
            ran += 1
            if cfg.once:
                break
        return ran

    def run_probe(self) -> bool:
        """Time a model's training steps for the train page's estimate (jobs.probes), when one is asked for
        and no job waits; True when one was run."""
        from jobs import probes

        probe = probes.claim(self.db, self.config.worker_id)
        if probe is None:
            return False
        from ia3app.recipe.step_probe import probe_step_cost

        from ia3app.errors import Cancelled

        log.info("speed probe %s: timing steps of %s (batch %s)", probe.id, probe.model, probe.batch_size)
        try:  # a job comes first: one queued meanwhile stops the probe, which waits for the next idle moment; so
            # does a probe asked for later (the user picked another model: the page waits for that one)
            measured = probe_step_cost(probe.model, probe.recipe(), device=self.config.device,
                                       should_stop=lambda: self.shutdown.is_set() or queue.has_queued(self.db)
                                       or probes.newer_waiting(self.db, probe))
        except Cancelled:
            probes.release(self.db, probe.id)
        except Exception as exc:  # recorded for the page, which then says why it shows a rough guide
            log.warning("speed probe %s failed: %s", probe.id, exc)
            probes.fail(self.db, probe.id, str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}")
        else:
            probes.finish(self.db, probe.id, measured.cost, measured.points, measured.load_s, measured.score_points)
        finally:
            _free_memory()
        return True

    def _check_db_file(self) -> None:
        """Notice a deleted or replaced database file (never write into a deleted one)."""
        ident = file_identity(self.config.data_dir)
        if ident is None:
            raise vanished_database(self.config.data_dir)
        if ident != self._db_ident:
            raise replaced_database(self.config.data_dir)

    def _storage_fault(self, exc: BaseException) -> None:
        """Log a storage fault once (not every poll), named: locked, full, read-only, damaged or gone."""
        text = str(exc)
        if isinstance(exc, StorageError):
            message = text
        elif "locked" in text or "busy" in text:
            message = f"the queue is busy ({text}); trying again"
        elif "disk is full" in text or "readonly" in text or "disk I/O" in text:
            message = (f"the database in {self.config.data_dir} cannot be written ({text}); free some disk space "
                       "or make it writable — no job is claimed until then")
        else:
            message = str(corrupt_database(self.config.data_dir, exc))
        if message != self._fault:
            log.error("%s", message)
            self._fault = message

    def run_one(self, job: queue.Job) -> str:
        """Run one claimed job to a final (or requeued) state; returns what became of it."""
        cfg = self.config
        log.info("job %s: claimed (attempt %s/%s)", job.id, job.attempts, job.max_attempts)
        steps = job.request.spec.recipe.steps if isinstance(job.request, JobRequest) else None
        progress = ProgressWriter(self.db, job.id, cfg.worker_id, steps, cfg.progress_interval_s)
        heart = Heartbeat(cfg.data_dir / DB_FILENAME, job.id, cfg.worker_id, cfg.lease_s, cfg.heartbeat_s,
                          tick_s=cfg.cancel_poll_s, grace_s=cfg.cancel_grace_s, stall_s=cfg.stall_s,
                          last_progress=lambda: progress.last_event, phase=lambda: progress.phase,
                          stop_requested=self.shutdown.is_set)

        def should_stop() -> bool:
            return heart.cancelled.is_set() or heart.lost.is_set() or self.shutdown.is_set()

        heart.start()
        try:
            outcome = self._execute(job, progress, should_stop, heart)
        finally:
            heart.stop()
            _free_memory()
        log.info("job %s: %s", job.id, outcome)
        return outcome

    def _execute(self, job: queue.Job, progress: ProgressWriter, should_stop, heart: Heartbeat) -> str:
        from ia3app.errors import Cancelled

        try:
            with heart.interruptible():
                if job.kind == "suggest":
                    result = self._run_suggest(job, progress, should_stop)
                else:
                    result = self._run_recipe(job, progress, should_stop)
            self._finish(job, result)
            return "succeeded"
        except (Cancelled, JobInterrupted):
            if heart.stalled.is_set():
                return f"{heart.stall_outcome or 'stopped'} (stalled: {heart.stall_message})"
            if heart.lost.is_set():
                return "abandoned (another worker holds it)"
            if heart.cancelled.is_set():
                queue.mark_cancelled(self.db, job.id, self.config.worker_id)
                return "cancelled"
            queue.release(self.db, job.id, self.config.worker_id)  # shutting down: resume later
            return "given back to the queue (worker shutting down)"
        except queue.LeaseLost:
            return "abandoned (lease lost)"
        except BaseException as exc:  # classified, recorded, and re-raised if it is not an Exception
            kind, message, retry = classify(exc, progress.phase, self.config.data_dir)
            if kind == "crash":
                log.error("job %s crashed:\n%s", job.id, "".join(traceback.format_exception(exc)))
            try:
                status = queue.fail(self.db, job.id, self.config.worker_id, kind, message, retry)
            except queue.LeaseLost:
                return "abandoned (lease lost)"
            except sqlite3.OperationalError as db_exc:  # the database itself is unwritable right now
                log.error("job %s: could not record its failure (%s): %s; its lease will expire and the queue "
                          "will requeue or fail it", job.id, db_exc, message)
                return "left for the lease to expire"
            if not isinstance(exc, Exception):
                raise
            return f"{status} ({kind}: {message})"

    def _run_recipe(self, job: queue.Job, progress: ProgressWriter, should_stop) -> JobResult:
        with progress.untimed():  # a worker's first job: torch and transformers, ~7 CPU s and 2,000 modules
            from ia3app.backbones.cache import ModelCache
            from ia3app.recipe.run_job import run_job

            # imported here, not by the recipe's first phase before its first progress event
            import ia3app.backbones.loading  # noqa: F401
            import ia3app.evaluation.compare  # noqa: F401
            import ia3app.recipe.train  # noqa: F401

        spec, train_rows, eval_rows = load_inputs(self.db, self.store, job)
        out_dir = self.store.adapter_dir(job.id)
        self.models = self.models or ModelCache()
        return run_job(spec, train_rows, eval_rows, work_dir=self.store.checkpoint_dir(job.id), out_dir=out_dir,
                       progress=progress, should_stop=should_stop, device=self.config.device, models=self.models,
                       compile_cache_dir=self.config.data_dir / "cache" / "compile")

    def _run_suggest(self, job: queue.Job, progress: ProgressWriter, should_stop) -> SuggestResult:
        """Score the job's pool with its adapter through the serving engine and pick the rows to label next."""
        with progress.untimed():
            from ia3app.serving.engine import ServingEngine
            from ia3app.serving.suggest import suggest

        folder, rows, exclude = suggest_inputs(self.db, self.store, job)
        request = job.request
        progress(ProgressEvent("load", f"loading the adapter of job #{request.adapter_job}"))
        self.engine = self.engine or ServingEngine(device=self.config.device, max_models=1)

        def scored(done: int, total: int) -> None:
            progress(ProgressEvent("score", f"scored {done}/{total} pool rows", step=done, total_steps=total))

        result = suggest(self.engine, folder, rows, request.n, exclude=exclude, progress=scored,
                         should_stop=should_stop)
        result.adapter_job, result.pool_id = request.adapter_job, request.pool_id
        progress(ProgressEvent("done", f"{len(result.suggestions)} rows suggested from {result.scored}"))
        return result

    def _finish(self, job: queue.Job, result: JobResult | SuggestResult) -> None:
        if isinstance(result, SuggestResult):
            queue.complete(self.db, job.id, self.config.worker_id, result)
            return
        finish(self.db, self.store, job, self.config.worker_id, result)


def load_inputs(db, store: FileStore, job: queue.Job) -> tuple[JobSpec, list[dict], list[dict] | None]:
    """(JobSpec, training rows, held-out rows or None) of a claimed job, read from the store.

    The one place a job's data is resolved (owner-checked dataset, separate eval set or the
    request's Holdout split): the local worker runs the recipe on them here, the Ray dispatcher
    ships them to a node.
    """
    if job.request is None:
        raise UserError(job.request_error or "the stored job cannot be read")
    spec, data = job.request.spec, job.request.data
    dataset = repo.require_dataset(db, data.dataset_id, job.owner)  # owner-checked
    train_rows = store.read_json(dataset.rows_path)
    eval_rows = None
    if data.eval_dataset_id is not None:
        eval_rows = repo.load_rows(db, store, data.eval_dataset_id, job.owner)
    elif data.holdout is not None:
        train_rows, eval_rows = data.holdout.split(train_rows, spec.template.label_column or dataset.label_column)
    check_vectors_source(spec.init_vectors, store.root)
    check_init_adapter(db, spec.init_adapter, store, job.owner)
    for folder in store.bind_job_dirs(job.id, job.job_key):  # never resume another job's state
        log.warning("job %s: its folder held another job's files (a replaced database?); moved to %s", job.id, folder)
    return spec, train_rows, eval_rows


def suggest_inputs(db, store: FileStore, job: queue.Job) -> tuple[Path, list[dict], set[int]]:
    """(adapter folder, pool rows, pool rows already labelled or skipped) of a claimed suggest job, every
    id owner-checked: the adapter's job and the pool must both be the job owner's."""
    if job.request is None:
        raise UserError(job.request_error or "the stored job cannot be read")
    request = job.request
    adapter_job = queue.get_job(db, request.adapter_job, job.owner)
    if adapter_job is None or adapter_job.status != "succeeded":
        raise UserError(f"job #{request.adapter_job} is not one of your finished training jobs")
    folder = store.adapter_dir(adapter_job.id)
    if not (folder / "adapter.safetensors").is_file():
        raise UserError(f"job #{adapter_job.id}'s adapter files are missing from the data directory")
    pool = repo.require_pool(db, request.pool_id, job.owner)
    return folder, store.read_json(pool.rows_path), set(repo.pool_marks(db, pool.id, job.owner))


def check_vectors_source(init_vectors: str | None, data_dir: Path) -> None:
    """In the app, T-Few vectors come only from the release URL or a file inside the data directory."""
    if init_vectors:
        from ia3app.adapters.vector_sources import check_source

        check_source(init_vectors, allowed_dirs=[data_dir])


def check_init_adapter(db, init_adapter: str | None, store: FileStore, owner: int) -> None:
    """In the app, a job starts from an earlier adapter only when that adapter is one of its owner's."""
    if init_adapter and not repo.owns_adapter_dir(db, store.root, Path(init_adapter), owner):
        raise UserError("the adapter to start from is not one of your adapters")


def finish(db, store: FileStore, job: queue.Job, worker_id: str, result: JobResult) -> None:
    """Record a succeeded job whose adapter folder is in the store: its result (stored once) and the
    adapter's entry in the register."""
    queue.complete(db, job.id, worker_id, result, adapter_dir=f"adapters/{job.id}")
    store.remove(f"checkpoints/{job.id}")  # the adapter is written; the resume state is not needed


def classify(exc: BaseException, phase: str, data_dir: Path | None = None) -> tuple[str, str, bool]:
    """(error kind, message for a person, retry?) for an exception raised while running a job."""
    if _is_out_of_memory(exc):
        where = "GPU" if type(exc).__name__ == "OutOfMemoryError" or "CUDA" in str(exc) else "CPU"
        return ("out_of_memory",
                f"ran out of {where} memory during '{phase}': try a smaller batch_size (or a larger "
                "grad_accumulation), a shorter max_length, or a smaller model", False)
    if isinstance(exc, StorageError):
        return "storage", str(exc), False
    if isinstance(exc, sqlite3.OperationalError) and ("disk is full" in str(exc) or "readonly" in str(exc)):
        return ("storage", f"the database in the data directory {data_dir or '?'} cannot be written ({exc}); "
                "free some disk space or make it writable", False)
    if is_disk_error(exc):
        what = f"{exc.filename}" if getattr(exc, "filename", None) else "the job's files"
        return "storage", str(storage_error(exc, what, data_dir or Path("."))), False
    if isinstance(exc, UserError):
        if phase == "load":
            return "model", str(exc), False
        return "user_error", f"bad data or template: {exc}", False
    if isinstance(exc, KeyboardInterrupt):
        return "crash", "the worker was interrupted", True
    return "crash", f"{type(exc).__name__}: {exc} (during '{phase}'; the worker's log has the traceback)", True


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def watch_parent(pid: int, shutdown: threading.Event) -> None:
    """Set ``shutdown`` once ``pid`` is no longer our parent (it died, even by SIGKILL, without stopping us)."""
    while not shutdown.wait(1.0):
        if os.getppid() != pid:
            log.info("the app (pid %s) is gone; stopping", pid)
            shutdown.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.worker", description="Run queued ia3app training jobs.")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $IA3APP_DATA_DIR or ./data")
    parser.add_argument("--gpu", type=int, default=None, help="use this GPU only (sets CUDA_VISIBLE_DEVICES)")
    parser.add_argument("--once", action="store_true", help="run at most one job, then exit")
    parser.add_argument("--until-empty", action="store_true", help="exit when the queue is empty")
    parser.add_argument("--poll-s", type=float, default=1.0, help="seconds between looks at an empty queue")
    parser.add_argument("--lease-s", type=float, default=queue.DEFAULT_LEASE_S,
                        help="seconds without a heartbeat before a job is presumed lost")
    parser.add_argument("--heartbeat-s", type=float, default=None, help="default: lease / 3")
    parser.add_argument("--progress-interval-s", type=float, default=0.5)
    parser.add_argument("--stall-s", type=float, default=900.0,
                        help="requeue a job that reports no progress for this many seconds, a pause of the whole "
                        "process not counted (default 900; it resumes from its checkpoint, and fails after its "
                        "last attempt)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: GPU if available)")
    parser.add_argument("--worker-id", default="")
    parser.add_argument("--kinds", nargs="+", choices=JOB_KINDS, default=list(JOB_KINDS),
                        help="the kinds of job to claim (default: all): train, suggest")
    parser.add_argument("--exit-with-parent", type=int, default=None, metavar="PID",
                        help="stop (giving the running job back) when process PID is gone (the web app)")
    args = parser.parse_args(argv)
    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)  # before anything imports torch
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s [worker %(process)d] %(message)s")
    worker_id = args.worker_id or f"{socket.gethostname()}:{os.getpid()}" + (f":gpu{args.gpu}" if args.gpu is not None else "")
    try:
        worker = Worker(WorkerConfig(
            data_dir=args.data_dir or data_dir(), worker_id=worker_id, lease_s=args.lease_s,
            heartbeat_s=args.heartbeat_s, poll_s=args.poll_s, progress_interval_s=args.progress_interval_s,
            once=args.once, until_empty=args.until_empty, device=args.device, stall_s=args.stall_s,
            kinds=tuple(args.kinds)))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def on_signal(signum, _frame):
        log.info("signal %s: finishing up (the running job goes back to the queue)", signum)
        worker.shutdown.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.exit_with_parent is not None:
        threading.Thread(target=watch_parent, args=(args.exit_with_parent, worker.shutdown), daemon=True).start()
    worker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
