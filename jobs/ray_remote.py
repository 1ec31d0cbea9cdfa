"""The Ray side of the Ray backend: the mailbox actor and the task that runs one attempt of a job.

Nothing here touches the database or the file store: a node knows only what the dispatcher sent
it (an :class:`AttemptPayload`: spec, rows, the job's work files) and sends everything back through Ray:

- :class:`Mailbox` is an actor pinned to the dispatcher's node. A running attempt posts to it, fire-and-forget
  (calls from one caller run in order), a :data:`MailboxEvent`: where it runs (:class:`AttemptStarted`), its
  progress events, and every new or changed work file (:class:`WorkFile`, its checkpoints); the dispatcher
  drains it and writes the store. The dispatcher raises an attempt's stop flag there (cancel, shutdown,
  lease lost); the attempt polls the flag from ``should_stop`` at most every ``STOP_POLL_S``.
- :func:`run_attempt` is the Ray task: it lays the work files into a local temporary folder (so
  ``train`` resumes from the last checkpoint the app's machine holds), runs
  :func:`ia3app.recipe.run_job.run_job` on them, and returns an :data:`AttemptOutcome` (on success the
  finished adapter folder as bytes).

Everything that crosses Ray is a dataclass of this module or of ``ia3app.jobtypes`` (Ray pickles them; the
nodes import this module from the code shipped with the job), the rows aside (column -> value, as stored).
Each attempt carries a token; the dispatcher ignores posts whose token is not the job's current
attempt, so a straggler from an earlier attempt cannot write over a newer one.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import ray

from ia3app.jobtypes import JobResult, JobSpec, ProgressEvent

STOP_POLL_S = 0.5
"""Seconds between looks at the stop flag (each is one small actor call)."""
_MODELS = None
"""This worker process's ia3app.backbones.cache.ModelCache: the next CPU job of the same model skips the load.
(Not on GPUs: an idle Ray worker holding GPU memory would starve the next process given that GPU.)"""


@dataclass(frozen=True)
class AttemptPayload:
    """What the dispatcher sends one attempt of a job (Ray pickles it to the node)."""

    job_id: int
    token: str
    """This attempt's token: posts under any other token are ignored."""
    spec: JobSpec
    train_rows: list[dict]
    eval_rows: list[dict] | None
    work_files: dict[str, bytes]
    """The job's work folder as the app's machine holds it (relpath -> bytes): its checkpoints, to resume from."""
    device: str | None
    """'cpu' on a CPU-only placement, None (the node's GPU) otherwise: jobs.ray_resources.Resources.device."""
    progress_interval_s: float


@dataclass(frozen=True)
class AttemptSucceeded:
    result: JobResult
    adapter: dict[str, bytes]
    """The finished adapter folder (relpath -> bytes)."""


@dataclass(frozen=True)
class AttemptStopped:
    """The attempt stopped when asked (cancel, shutdown, lease lost) and sent its last checkpoint, or Ray
    cancelled its task."""


@dataclass(frozen=True)
class AttemptFailed:
    kind: str
    """As jobs.worker.classify names it (user_error, crash, oom, ...), or 'lost' (the node or worker died)."""
    message: str
    retry: bool


AttemptOutcome = AttemptSucceeded | AttemptStopped | AttemptFailed
"""How one attempt ended: run_attempt's return value, or the dispatcher's reading of a task that did not return."""


@dataclass(frozen=True)
class AttemptStarted:
    """Posted once the attempt runs: where (the Ray node and worker process)."""

    node: str
    pid: int
    host: str


@dataclass(frozen=True)
class WorkFile:
    """Posted for each new or changed file of the attempt's work folder (its checkpoints)."""

    path: str
    """Relative POSIX path inside the job's work folder."""
    data: bytes
    step: int | None
    """The last training step reported when the file was sent (None before the first)."""


MailboxEvent = AttemptStarted | ProgressEvent | WorkFile
"""What a running attempt posts to the mailbox."""


@ray.remote(num_cpus=0, max_restarts=0)
class Mailbox:
    """Events from running attempts to the dispatcher, and stop flags from the dispatcher to them."""

    def __init__(self) -> None:
        self._events: list[tuple[int, str, MailboxEvent]] = []
        self._stops: set[str] = set()

    def post(self, job_id: int, token: str, event: MailboxEvent) -> None:
        self._events.append((job_id, token, event))

    def drain(self) -> list[tuple[int, str, MailboxEvent]]:
        events, self._events = self._events, []
        return events

    def stop(self, token: str) -> None:
        self._stops.add(token)

    def forget(self, token: str) -> None:
        self._stops.discard(token)

    def stop_requested(self, token: str) -> bool:
        return token in self._stops


def safe_relpath(relpath: str) -> str:
    """A relative POSIX path that stays inside its folder; anything else is refused."""
    path = PurePosixPath(relpath)
    if not relpath or path.is_absolute() or any(part in ("", ".", "..") for part in path.parts):
        raise ValueError(f"refused file path {relpath!r} from a Ray task: it must stay inside the job's folder")
    return path.as_posix()


def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (hidden temporaries skipped), by relative POSIX path."""
    files = {}
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not path.is_symlink() and not any(p.startswith(".") for p in rel.parts):
            files[rel.as_posix()] = path.read_bytes()
    return files


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for relpath, data in files.items():
        target = Path(root) / safe_relpath(relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


class _WorkMirror:
    """Sends each new or changed file of the attempt's work folder (its checkpoints) to the mailbox."""

    def __init__(self, root: Path, post: Callable[[MailboxEvent], None]) -> None:
        self.root, self.post = root, post
        self.seen: dict[str, tuple[int, int]] = {}
        self.last_step: int | None = None

    def remember(self) -> None:
        self.seen = self._stat()

    def sync(self) -> None:
        for relpath, stamp in self._stat().items():
            if self.seen.get(relpath) != stamp:
                self.post(WorkFile(relpath, (self.root / relpath).read_bytes(), self.last_step))
                self.seen[relpath] = stamp

    def _stat(self) -> dict[str, tuple[int, int]]:
        stamps = {}
        for path in self.root.rglob("*"):
            rel = path.relative_to(self.root)
            if path.is_file() and not any(p.startswith(".") for p in rel.parts):
                st = path.stat()
                stamps[rel.as_posix()] = (st.st_mtime_ns, st.st_size)
        return stamps


def _release_gpu_cache() -> None:
    """Hand cached CUDA blocks back between tasks (no gc.collect here: it would sit inside the job's
    time, and Python's collector runs on its own)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_attempt(payload: AttemptPayload, mailbox) -> AttemptOutcome:
    """One attempt of one job on whichever node Ray placed it: succeeded (the JobResult and the adapter folder),
    stopped (the dispatcher raised the stop flag; the last checkpoint was sent), or failed (classified as the
    local worker does)."""
    from ia3app.errors import Cancelled
    from ia3app.recipe.run_job import run_job
    from jobs.progress import ProgressWriter
    from jobs.worker import classify

    job_id, token = payload.job_id, payload.token
    last_ref: list = [None]

    def post(event: MailboxEvent) -> None:
        last_ref[0] = mailbox.post.remote(job_id, token, event)

    tmp = Path(tempfile.mkdtemp(prefix=f"ia3app-job{job_id}-"))
    work_dir, out_dir = tmp / "work", tmp / "out"
    work_dir.mkdir()
    out_dir.mkdir()
    write_tree(work_dir, payload.work_files)
    mirror = _WorkMirror(work_dir, post)
    mirror.remember()  # what the app's machine already holds is not sent back
    import ia3app.backbones.loading  # noqa: F401  torch and transformers, before the stall clock starts
    import ia3app.recipe.train  # noqa: F401

    node = ray.get_runtime_context().get_node_id()
    post(AttemptStarted(node, os.getpid(), os.uname().nodename))

    spec = payload.spec
    writer = ProgressWriter(None, job_id, "", spec.recipe.steps, payload.progress_interval_s, write=post)
    stop_state = {"checked": 0.0, "stop": False}

    def should_stop() -> bool:
        mirror.sync()  # train() checks before each step: the previous step's checkpoint is complete
        now = time.monotonic()
        if not stop_state["stop"] and now - stop_state["checked"] >= STOP_POLL_S:
            stop_state["checked"] = now
            try:
                stop_state["stop"] = ray.get(mailbox.stop_requested.remote(token), timeout=30)
            except (ray.exceptions.RayError, TimeoutError):  # the dispatcher is gone: nobody to report to
                stop_state["stop"] = True
        return stop_state["stop"]

    def progress(event: ProgressEvent) -> None:
        if event.step is not None:
            mirror.last_step = event.step
        mirror.sync()
        writer(event)

    global _MODELS
    models = None
    if payload.device == "cpu":
        from ia3app.backbones.cache import ModelCache

        models = _MODELS = _MODELS or ModelCache()
    try:
        result = run_job(spec, payload.train_rows, payload.eval_rows, work_dir=work_dir, out_dir=out_dir,
                         progress=progress, should_stop=should_stop, device=payload.device, models=models,
                         compile_cache_dir=Path(tempfile.gettempdir()) / "ia3app-compile-cache")
        outcome = AttemptSucceeded(result, read_tree(out_dir))
    except Cancelled:
        mirror.sync()  # train() wrote a checkpoint before stopping
        outcome = AttemptStopped()
    except Exception as exc:  # classified here, where the exception is a real one; recorded by the dispatcher
        mirror.sync()
        kind, message, retry = classify(exc, writer.phase)
        if kind == "crash":
            traceback.print_exc()  # into the Ray worker's log
        outcome = AttemptFailed(kind, message, retry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        _release_gpu_cache()
    if last_ref[0] is not None:
        ray.get(last_ref[0])  # every post has landed before the outcome is seen
    return outcome
