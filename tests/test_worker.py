"""jobs.worker in process on a tiny real T0-style model: a job end to end, and each failure kind."""

import errno
import os
from pathlib import Path

import pytest

from ia3app.config import RecipeConfig
from ia3app.jobtypes import DataRef, Holdout, JobRequest, JobResult, JobSpec
from ia3app.templates.spec import TemplateSpec
from jobs import queue as q
from jobs.worker import Worker, WorkerConfig, classify
from storage import repo
from storage.db import open_db
from storage.files import FileStore
from storage.users import create_user

TEMPLATE = {"name": "sentiment", "input": "{{text}} Was it good or bad?", "label_column": "label",
            "choices": ["bad", "good"]}
ROWS = [{"text": t, "label": l} for t, l in [
    ("a wonderful film", "good"), ("dull and far too long", "bad"), ("I loved every minute", "good"),
    ("a waste of time", "bad"), ("great acting and a clever plot", "good"), ("boring", "bad"),
    ("a joy to watch", "good"), ("the worst film this year", "bad")]]


def recipe(**overrides) -> RecipeConfig:
    return RecipeConfig(**{"steps": 4, "batch_size": 2, "warmup_steps": 0, "checkpoint_every": 2, "seed": 0,
                           "max_length": 64, "eval_batch_size": 8, **overrides})


class Env:
    """A data directory with one user and one dataset, plus helpers to submit and inspect jobs."""

    def __init__(self, data_dir: Path, model_dir: Path, user: str = "alice"):
        self.data_dir, self.model_dir = data_dir, model_dir
        self.db, self.store = open_db(data_dir), FileStore(data_dir)
        self.user = create_user(self.db, user, "password1")
        self.dataset = repo.save_dataset(self.db, self.store, self.user, "reviews", "reviews.csv", b"raw",
                                         ["text", "label"], ROWS, "label")

    def config(self, holdout=None, methods=(), template=None, model=None, **recipe_overrides) -> JobRequest:
        spec = JobSpec(model=str(model or self.model_dir), template=TemplateSpec.from_dict(template or TEMPLATE),
                       recipe=recipe(**recipe_overrides), eval_methods=list(methods))
        return JobRequest(spec, DataRef(self.dataset, holdout=Holdout(**holdout) if holdout else None))

    def submit(self, priority=0, **kw) -> int:
        return q.submit(self.db, self.user, self.config(**kw), priority=priority)

    def job(self, job_id):
        return q.get_job(self.db, job_id, self.user)

    def worker(self, **kw) -> Worker:
        return Worker(WorkerConfig(data_dir=self.data_dir, lease_s=kw.pop("lease_s", 10),
                                   progress_interval_s=kw.pop("progress_interval_s", 0.0), until_empty=True, **kw))


@pytest.fixture
def env(tmp_path, tiny_model_dir):
    return Env(tmp_path / "data", tiny_model_dir("t0"))


def adapter_vectors(data_dir: Path, job_id: int) -> dict:
    from safetensors.torch import load_file

    return load_file(str(data_dir / "adapters" / str(job_id) / "adapter.safetensors"))


def test_job_runs_end_to_end_and_the_results_page_only_has_to_read(env):
    job_id = env.submit(holdout={"fraction": 0.25, "seed": 0}, methods=["zero-shot", "in-context", "t-few"])
    assert env.worker().serve() == 1
    job = env.job(job_id)
    assert job.status == "succeeded", job.error_message
    assert isinstance(job.result, JobResult) and job.attempts == 1
    assert job.result.num_train == 6 and job.result.num_eval == 2 and job.result.labels == ["bad", "good"]
    out = env.data_dir / "adapters" / str(job_id)
    for name in ("adapter.safetensors", "ia3_config.json", "README.md", "peft"):
        assert (out / name).exists(), name
    assert not (out / "results.json").exists()  # the results are stored once: the job's result
    adapter_id = env.db.execute("SELECT id FROM adapters WHERE job = ?", [job_id]).fetchone()[0]
    assert repo.adapter_job(env.db, adapter_id, env.user) == job_id  # registered for the prediction API
    params = job.result.params
    assert 0 < params["added"] < params["base"] and params["adapter_bytes"] > 0
    methods = job.result.methods
    assert set(methods) == {"zero-shot", "in-context", "t-few"}
    assert all(0 <= m["accuracy"] <= 1 and m["latency_s"] > 0 and m["flops"] > 0 for m in methods.values())
    assert "confusion_matrix" in methods["t-few"] and job.result.metrics["t-few"]["n"] == 2
    # the held-out rows are the ones Holdout.split picks (the one split rule), and only those
    _, held = Holdout(0.25, 0).split(ROWS, "label")
    assert len(methods["t-few"]["predictions"]) == len(held) == 2
    events = q.progress_events(env.db, job_id, env.user)
    phases = [e.phase for e in events]
    assert phases[:2] == ["validate", "load"] and phases[-1] == "done" and "evaluate" in phases and "export" in phases
    train = [e for e in events if e.phase == "train"]
    assert [e.step for e in train] == [1, 2, 3, 4] and all(e.total_steps == 4 for e in train)
    assert all(e.loss is not None and e.loss_lm is not None and e.lr is not None for e in train)
    assert all(e.eta_s is not None and e.elapsed_s is not None for e in train) and train[-1].eta_s == 0.0
    assert not (env.data_dir / "checkpoints" / str(job_id)).exists()  # resume state dropped after success


def test_progress_writes_are_throttled_but_keep_first_last_and_phase_changes(env):
    job_id = env.submit(steps=6)
    env.worker(progress_interval_s=60).serve()
    assert env.job(job_id).status == "succeeded"
    train = [e.step for e in q.progress_events(env.db, job_id, env.user) if e.phase == "train"]
    assert train == [1, 6]


def test_bad_template_is_a_user_error_and_not_retried(env):
    bad = {**TEMPLATE, "input": "{{review}} good or bad?"}
    job_id = env.submit(template=bad)
    env.worker().serve()
    job = env.job(job_id)
    assert job.status == "failed" and job.attempts == 1 and job.error_kind == "user_error"
    assert job.error_message.startswith("bad data or template:") and "review" in job.error_message


def test_missing_model_is_reported_as_such(env, tmp_path):
    job_id = env.submit(model=tmp_path / "no-such-model")
    env.worker().serve()
    job = env.job(job_id)
    assert job.status == "failed" and job.attempts == 1 and job.error_kind == "model"
    assert "no-such-model" in job.error_message


def test_another_users_dataset_is_refused(env):
    other = create_user(env.db, "mallory", "password9")
    job_id = q.submit(env.db, other, env.config())  # names alice's dataset id
    env.worker().serve()
    job = q.get_job(env.db, job_id, other)
    assert job.status == "failed" and job.error_kind == "user_error" and "not found" in job.error_message


def test_crash_is_retried_three_times_then_failed(env, monkeypatch):
    import ia3app.recipe.run_job

    calls = []

    def crash(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("device-side assert triggered")

    monkeypatch.setattr(ia3app.recipe.run_job, "run_job", crash)
    job_id = env.submit()
    env.worker().serve()
    job = env.job(job_id)
    assert len(calls) == 3 and job.status == "failed" and job.attempts == 3 and job.error_kind == "crash"
    assert "RuntimeError: device-side assert triggered" in job.error_message and "after 3 attempts" in job.error_message


def test_out_of_memory_is_failed_with_advice_and_not_retried(env, monkeypatch):
    import ia3app.recipe.run_job

    def oom(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(ia3app.recipe.run_job, "run_job", oom)
    job_id = env.submit()
    env.worker().serve()
    job = env.job(job_id)
    assert job.status == "failed" and job.attempts == 1 and job.error_kind == "out_of_memory"
    assert "CPU memory" in job.error_message and "smaller batch_size" in job.error_message


def test_disk_full_while_writing_the_adapter_fails_the_job_clearly(env, monkeypatch):
    real_replace = os.replace

    def replace(src, dst):
        if "/adapters/" in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    job_id = env.submit()
    env.worker().serve()
    job = env.job(job_id)
    assert job.status == "failed" and job.error_kind == "storage" and job.attempts == 1
    assert "No space left on device" in job.error_message and "free some disk space" in job.error_message
    assert job.result is None


def test_unwritable_adapter_folder_fails_the_job_clearly(env):
    job_id = env.submit()
    (env.data_dir / "adapters" / str(job_id)).write_text("a file where the job's folder should be")
    env.worker().serve()
    job = env.job(job_id)
    assert job.status == "failed" and job.error_kind == "storage" and "data directory" in job.error_message


def test_classify_words_each_kind():
    from ia3app.errors import UserError

    class OutOfMemoryError(RuntimeError):
        pass

    assert classify(OutOfMemoryError("CUDA out of memory"), "train")[:1] == ("out_of_memory",)
    assert "GPU memory" in classify(OutOfMemoryError("CUDA out of memory"), "train")[1]
    assert classify(UserError("model 'x' was not found"), "load") == ("model", "model 'x' was not found", False)
    assert classify(UserError("column 'y'"), "train")[0] == "user_error"
    assert classify(OSError(errno.EROFS, "Read-only file system", "/d/adapters/1/x"), "export")[0] == "storage"
    assert classify(ValueError("boom"), "train")[0::2] == ("crash", True)
    import sqlite3
    assert classify(sqlite3.OperationalError("database or disk is full"), "train")[0] == "storage"
