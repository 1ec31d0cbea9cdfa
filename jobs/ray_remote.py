"""The Ray side of the Ray backend: the mailbox actor and the task that runs one attempt of a job.

Nothing here touches the database or the file store: a node knows only what the dispatcher sent
it (spec, rows, the job's work files) and sends everything back through Ray:

- :class:`Mailbox` is an actor pinned to the dispatcher's node. A running attempt posts its
  progress events and every new or changed work file (its checkpoints) to it, fire-and-forget
  (calls from one caller run in order); the dispatcher drains it and writes the store. The
  dispatcher raises an attempt's stop flag there (cancel, shutdown, lease lost); the attempt
  polls the flag from ``should_stop`` at most every ``STOP_POLL_S``.
- :func:`run_attempt` is the Ray task: it lays the work files into a local temporary folder (so
  ``train`` resumes from the last checkpoint the app's machine holds), runs
  :func:`ia3app.recipe.run_job.run_job` on them, and returns the finished adapter folder as bytes.

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
from pathlib import Path, PurePosixPath
from typing import Any

import ray

from ia3app.jobtypes import ProgressEvent

STOP_POLL_S = 0.5
"""Seconds between looks at the stop flag (each is one small actor call)."""
_MODELS = None
"""This worker process's ia3app.backbones.cache.ModelCache: the next CPU job of the same model skips the load.
(Not on GPUs: an idle Ray worker holding GPU memory would starve the next process given that GPU.)"""


@ray.remote(num_cpus=0, max_restarts=0)
class Mailbox:
    """Events from running attempts to the dispatcher, and stop flags from the dispatcher to them."""

    def __init__(self) -> None:
        self._events: list[tuple[int, str, str, Any]] = []
        self._stops: set[str] = set()

    def post(self, job_id: int, token: str, kind: str, payload: Any) -> None:
        self._events.append((job_id, token, kind, payload))

    def drain(self) -> list[tuple[int, str, str, Any]]:
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

    def __init__(self, root: Path, post) -> None:
        self.root, self.post = root, post
        self.seen: dict[str, tuple[int, int]] = {}
        self.last_step: int | None = None

    def remember(self) -> None:
        self.seen = self._stat()

    def sync(self) -> None:
        for relpath, stamp in self._stat().items():
            if self.seen.get(relpath) != stamp:
                self.post("file", {"path": relpath, "data": (self.root / relpath).read_bytes(),
                                   "step": self.last_step})
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


def run_attempt(payload: dict[str, Any], mailbox) -> dict[str, Any]:
    """One attempt of one job on whichever node Ray placed it. Returns an outcome dict:

    {"status": "succeeded", "result": the JobResult, "adapter": {relpath: bytes}},
    {"status": "stopped"} (the dispatcher raised the stop flag; the last checkpoint was sent),
    or {"status": "failed", "kind", "message", "retry"} (classified as the local worker does).
    """
    from ia3app.errors import Cancelled
    from ia3app.recipe.run_job import run_job
    from jobs.progress import ProgressWriter
    from jobs.worker import classify

    job_id, token = payload["job_id"], payload["token"]
    last_ref: list = [None]

    def post(kind: str, data: Any) -> None:
        last_ref[0] = mailbox.post.remote(job_id, token, kind, data)

    tmp = Path(tempfile.mkdtemp(prefix=f"ia3app-job{job_id}-"))
    work_dir, out_dir = tmp / "work", tmp / "out"
    work_dir.mkdir()
    out_dir.mkdir()
    write_tree(work_dir, payload.get("work_files") or {})
    mirror = _WorkMirror(work_dir, post)
    mirror.remember()  # what the app's machine already holds is not sent back
    import ia3app.backbones.loading  # noqa: F401  torch and transformers, before the stall clock starts
    import ia3app.recipe.train  # noqa: F401

    node = ray.get_runtime_context().get_node_id()
    post("started", {"node": node, "pid": os.getpid(), "host": os.uname().nodename})

    spec = payload["spec"]  # a JobSpec (ia3app.jobtypes); Ray pickles it
    writer = ProgressWriter(None, job_id, "", spec.recipe.steps, payload.get("progress_interval_s", 0.5),
                            write=lambda event: post("progress", event))
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
    if payload.get("device") == "cpu":
        from ia3app.backbones.cache import ModelCache

        models = _MODELS = _MODELS or ModelCache()
    try:
        result = run_job(spec, payload["train_rows"], payload.get("eval_rows"), work_dir=work_dir, out_dir=out_dir,
                         progress=progress, should_stop=should_stop, device=payload.get("device"), models=models,
                         compile_cache_dir=Path(tempfile.gettempdir()) / "ia3app-compile-cache")
        outcome = {"status": "succeeded", "result": result, "adapter": read_tree(out_dir)}
    except Cancelled:
        mirror.sync()  # train() wrote a checkpoint before stopping
        outcome = {"status": "stopped"}
    except Exception as exc:  # classified here, where the exception is a real one; recorded by the dispatcher
        mirror.sync()
        kind, message, retry = classify(exc, writer.phase)
        if kind == "crash":
            traceback.print_exc()  # into the Ray worker's log
        outcome = {"status": "failed", "kind": kind, "message": message, "retry": retry}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        _release_gpu_cache()
    if last_ref[0] is not None:
        ray.get(last_ref[0])  # every post has landed before the outcome is seen
    return outcome
