"""The Ray backend on a real Ray runtime: a head and two worker nodes on this machine (Ray's own
test cluster, real raylets and worker processes; the ray_cluster fixture in conftest.py), a tiny
T0-style model, a few steps per job; then serving on Ray (the serving engine as Ray Serve
replicas, requests routed by adapter, answers equal to the local engine). One cluster for the
module; the test that removes a node puts a fresh one back.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

ray = pytest.importorskip("ray")

from ia3app.errors import UserError  # noqa: E402
from jobs import queue as q  # noqa: E402
from storage import repo  # noqa: E402
from storage.users import create_user  # noqa: E402
from jobfactory import on_dataset  # noqa: E402
from test_worker import ROWS, Env, adapter_vectors  # noqa: E402
from timing import wait_for  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
HOLDOUT = {"fraction": 0.25, "seed": 0}
HANG_S = 600.0
"""run_until's deadline: it only bounds a hang. At load 14 (benches at normal priority, these tests under
nice 10) a module's first attempt had not reached its first training step after 120 s: the Ray worker
imports torch and transformers first."""
BAD_TEMPLATE = {"name": "x", "input": "{{review}} good or bad?", "label_column": "label", "choices": ["bad", "good"]}
"""Names a column the dataset lacks (it has text, label): the node fails the job while rendering."""


def dispatcher(data_dir, **kw):
    from jobs.ray_backend import Dispatcher, DispatcherConfig

    return Dispatcher(DispatcherConfig(data_dir=data_dir, progress_interval_s=kw.pop("progress_interval_s", 0.0),
                                       **kw))


def run_until(d, done, timeout_s=HANG_S):
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"timed out; attempts {list(d.attempts)}, history {d.history}"
        d.step()


def local_vectors(tmp_path, model_dir, config, name):
    """The same job on the local backend (jobs.worker in this process): vectors and result."""
    env = Env(tmp_path / f"local-{name}", model_dir)
    job_id = q.submit(env.db, env.user, on_dataset(config, env.dataset))
    assert env.worker().serve() == 1
    job = env.job(job_id)
    assert job.status == "succeeded", job.error_message
    return adapter_vectors(env.data_dir, job_id), job.result


def assert_same_vectors(a, b, atol=1e-6):
    import torch

    assert set(a) == set(b)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol, rtol=0), name


def test_twenty_jobs_from_three_users_run_once_each_over_two_nodes(ray_cluster, tmp_path, tiny_model_dir):
    model = tiny_model_dir("t0")
    env = Env(tmp_path / "data", model)
    users = [(env.user, env.dataset)]
    for name in ("bob", "carol"):
        user = create_user(env.db, name, "password1")
        users.append((user, repo.save_dataset(env.db, env.store, user, "reviews", "reviews.csv", b"raw",
                                              ["text", "label"], ROWS, "label")))
    configs = [env.config(holdout=HOLDOUT, methods=["t-few"], seed=seed) for seed in range(3)]  # one recipe per user
    jobs = {}
    for i in range(20):
        user, dataset = users[i % 3]
        jobs[q.submit(env.db, user, on_dataset(configs[i % 3], dataset))] = (user, i % 3)
    d = dispatcher(env.data_dir, until_empty=True)
    assert d.serve() == 20
    assert sorted(h["job"] for h in d.history) == sorted(jobs)  # each ran once: one attempt, one outcome
    assert {h["outcome"] for h in d.history} == {"succeeded"}
    assert len({h["node"] for h in d.history}) == 2  # both worker nodes trained; the head (0 CPUs) none
    expected = {k: local_vectors(tmp_path, model, configs[k], k) for k in range(3)}
    for job_id, (user, k) in jobs.items():
        job = q.get_job(env.db, job_id, user)
        assert job.status == "succeeded" and job.attempts == 1, job.error_message
        vectors, result = expected[k]
        assert_same_vectors(adapter_vectors(env.data_dir, job_id), vectors)
        assert job.result.metrics == result.metrics and job.result.num_eval == result.num_eval == 2
        assert (env.data_dir / "adapters" / str(job_id) / "ia3_config.json").is_file()
        assert not (env.data_dir / "checkpoints" / str(job_id)).exists()
        events = q.progress_events(env.db, job_id, user)
        assert [e.step for e in events if e.phase == "train"] == [1, 2, 3, 4]
        phases = [e.phase for e in events]
        assert phases.count("done") == 1 and phases.index("load") < phases.index("train")
        assert set(job.result.methods) == {"t-few"} and job.result.params["added"] > 0
    assert env.db.execute("SELECT count(*) FROM adapters").fetchone()[0] == 20


def test_bad_template_fails_once_without_retry(ray_cluster, tmp_path, tiny_model_dir):
    env = Env(tmp_path / "data", tiny_model_dir("t0"))
    job_id = env.submit(template=BAD_TEMPLATE)
    dispatcher(env.data_dir, until_empty=True).serve()
    job = env.job(job_id)
    assert job.status == "failed" and job.attempts == 1 and job.error_kind == "user_error"
    assert "review" in job.error_message


def test_an_attempt_travels_through_ray_as_typed_objects(ray_cluster, tmp_path, tiny_model_dir, monkeypatch):
    """What crosses Ray for an attempt is typed, not a dict: the payload the dispatcher sends is an
    AttemptPayload (and arrives as one in a Ray worker on a node), and what comes back through Ray's object
    store is an AttemptSucceeded (with the JobResult and the adapter's files) or an AttemptFailed. The
    dispatcher's way to start an attempt is wrapped to keep each payload and its object ref."""
    from ia3app.jobtypes import JobResult, JobSpec
    from jobs import ray_backend
    from jobs.ray_remote import AttemptFailed, AttemptPayload, AttemptSucceeded

    sent = []
    real = ray_backend._remote_attempt

    def options(**kw):
        submit = real.options(**kw)

        def remote(payload, mailbox):
            ref = submit.remote(payload, mailbox)
            sent.append((payload, ref))
            return ref
        return SimpleNamespace(remote=remote)

    monkeypatch.setattr(ray_backend, "_remote_attempt", SimpleNamespace(options=options))
    env = Env(tmp_path / "data", tiny_model_dir("t0"))
    good, bad = env.submit(), env.submit(template=BAD_TEMPLATE)
    d = dispatcher(env.data_dir, until_empty=True)
    assert d.serve() == 2
    assert env.job(good).status == "succeeded" and env.job(bad).status == "failed"
    assert all(h["node"] for h in d.history)  # each attempt's AttemptStarted reached the dispatcher
    by_job = {payload.job_id: (payload, ref) for payload, ref in sent}
    assert sorted(by_job) == [good, bad]
    for payload, _ in sent:
        assert type(payload) is AttemptPayload and type(payload.spec) is JobSpec

    @ray.remote(num_cpus=1)
    def type_on_a_node(obj):
        return f"{type(obj).__module__}.{type(obj).__qualname__}"

    assert ray.get(type_on_a_node.remote(by_job[good][0])) == "jobs.ray_remote.AttemptPayload"
    succeeded, failed = ray.get([by_job[good][1], by_job[bad][1]])
    assert type(succeeded) is AttemptSucceeded and type(succeeded.result) is JobResult
    assert "ia3_config.json" in succeeded.adapter and isinstance(succeeded.adapter["ia3_config.json"], bytes)
    assert type(failed) is AttemptFailed and failed.kind == "user_error" and not failed.retry
    assert "review" in failed.message


def test_cancel_reaches_the_running_task_within_seconds(ray_cluster, tmp_path, tiny_model_dir):
    env = Env(tmp_path / "data", tiny_model_dir("t0"))
    job_id = env.submit(steps=2000, checkpoint_every=50)
    d = dispatcher(env.data_dir)
    run_until(d, lambda: any(e.phase == "train" for e in q.progress_events(env.db, job_id, env.user)))
    assert q.cancel(env.db, job_id, env.user) == "running"
    run_until(d, lambda: env.job(job_id).status != "running", timeout_s=120)
    job = env.job(job_id)
    assert job.status == "cancelled"  # how fast: a timing claim, for bench/ (bench_cancel, bench_ray)
    steps = [e.step for e in q.progress_events(env.db, job_id, env.user) if e.phase == "train"]
    assert steps[-1] < 2000 and not d.attempts


def test_dispatcher_killed_and_restarted_loses_nothing(ray_cluster, tmp_path, tiny_model_dir):
    """SIGKILL the dispatcher (the app) mid-training: Ray ends its tasks; the next dispatcher finds
    the jobs once their leases expire and finishes each exactly once, resuming from the checkpoints
    that had reached the app's machine."""
    c, _ = ray_cluster
    env = Env(tmp_path / "data", tiny_model_dir("t0"))
    ids = [env.submit(steps=60, checkpoint_every=10, seed=i) for i in range(2)]
    cmd = [sys.executable, "-m", "jobs.ray_backend", "--address", c.address, "--data-dir", str(env.data_dir),
           "--lease-s", "6", "--poll-s", "0.1"]
    log = open(tmp_path / "dispatcher.log", "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        ckpt = env.data_dir / "checkpoints" / str(ids[0]) / "checkpoints" / "checkpoint.pt"
        deadline = time.monotonic() + 120
        while not ckpt.is_file():
            assert proc.poll() is None, (tmp_path / "dispatcher.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "dispatcher.log").read_text()
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
    assert env.job(ids[0]).status == "running"  # as the dead dispatcher left it
    d = dispatcher(env.data_dir, lease_s=6, until_empty=True)
    d.serve()
    for job_id in ids:
        job = env.job(job_id)
        assert job.status == "succeeded", job.error_message
        assert env.db.execute("SELECT count(*) FROM adapters WHERE job = ?", [job_id]).fetchone()[0] == 1
    first = env.job(ids[0])
    assert first.attempts == 2 and first.result.training.resumed_from_step >= 10, d.history
    assert [h["job"] for h in d.history].count(ids[0]) == 1


def test_graceful_stop_gives_jobs_back_with_their_checkpoints(ray_cluster, tmp_path, tiny_model_dir):
    env = Env(tmp_path / "data", tiny_model_dir("t0"))
    # no periodic checkpoint: only the one written on stop. Enough steps that the job cannot finish
    # between the dispatcher seeing step 5 and stop_all reaching the task, however loaded the machine
    # (with 40 steps, at load ~10 it did: the task ran 35 steps before the stop arrived).
    job_id = env.submit(steps=400, checkpoint_every=1000)
    d = dispatcher(env.data_dir)
    run_until(d, lambda: any((e.step or 0) >= 5 for e in q.progress_events(env.db, job_id, env.user)))
    d.stop_all()
    job = env.job(job_id)
    assert job.status == "queued" and job.attempts == 0  # given back, not counted as a failure
    assert (env.data_dir / "checkpoints" / str(job_id) / "checkpoints" / "checkpoint.pt").is_file()
    dispatcher(env.data_dir, until_empty=True).serve()
    job = env.job(job_id)
    assert job.status == "succeeded" and job.result.training.resumed_from_step >= 5


def test_a_task_without_progress_is_failed_as_stalled_and_stopped(ray_cluster, tmp_path, tiny_model_dir,
                                                                   monkeypatch):
    """The local worker's stall rule holds on Ray: a held-out file that is slow to validate on the
    node (no progress events) fails the job as 'stalled'; Ray cancels the task that cannot stop by itself."""
    import test_worker_limits

    calibrate = test_worker_limits._slow_n  # rows of ~0.15 s here: far under the 1 s render limit on a
    monkeypatch.setattr(test_worker_limits, "_slow_n", lambda: calibrate(0.15))  # one-thread, loaded node
    env = Env(tmp_path / "data", tiny_model_dir("t0"))
    _slow_job = test_worker_limits._slow_job
    job_id = _slow_job(env)
    d = dispatcher(env.data_dir, stall_s=2.0, cancel_grace_s=1.0)
    run_until(d, lambda: env.job(job_id).status in q.TERMINAL and not d.attempts, timeout_s=90)
    job = env.job(job_id)
    assert job.status == "failed" and job.error_kind == "stalled" and job.attempts == 1
    assert "no progress for 2 s during 'validate'" in job.error_message
    assert d.history[-1]["outcome"] == "failed (stalled)"


def test_a_worker_process_killed_each_attempt_fails_the_job_after_its_attempts(ray_cluster, tmp_path,
                                                                             tiny_model_dir):
    """The queue's attempt limit holds on Ray: the Ray worker process running the job is killed (as
    the kernel's OOM killer would) on each attempt; the job is requeued, then failed."""
    env = Env(tmp_path / "data", tiny_model_dir("t0"))
    job_id = q.submit(env.db, env.user, env.config(steps=2000, checkpoint_every=50), max_attempts=2)
    d = dispatcher(env.data_dir)
    for attempt in (1, 2):
        run_until(d, lambda: job_id in d.attempts and d.attempts[job_id].job.attempts == attempt
                  and d.attempts[job_id].phase == "train")
        os.kill(d.attempts[job_id].pid, signal.SIGKILL)
    run_until(d, lambda: env.job(job_id).status in q.TERMINAL and not d.attempts)
    job = env.job(job_id)
    assert job.status == "failed" and job.attempts == 2 and job.error_kind == "lost"
    assert "died" in job.error_message and "gave up after 2 attempts" in job.error_message
    assert [h["outcome"].split(" ")[0] for h in d.history] == ["queued", "failed"]


def test_node_removed_mid_training_resumes_elsewhere_with_the_same_vectors(ray_cluster, tmp_path, tiny_model_dir):
    c, nodes = ray_cluster
    model = tiny_model_dir("t0")
    env = Env(tmp_path / "data", model)
    config = env.config(steps=120, checkpoint_every=10)
    job_id = q.submit(env.db, env.user, config)
    d = dispatcher(env.data_dir)
    run_until(d, lambda: job_id in d.attempts and (d.attempts[job_id].checkpoint_step or 0) >= 20)
    first_node = d.attempts[job_id].node
    removed = next(n for n in nodes if n.node_id == first_node)
    c.remove_node(removed)
    nodes.remove(removed)
    run_until(d, lambda: env.job(job_id).status in q.TERMINAL, timeout_s=180)
    nodes.append(c.add_node(num_cpus=1))  # for the tests that come after
    job = env.job(job_id)
    assert job.status == "succeeded" and job.attempts == 2, job.error_message
    assert [h["outcome"].split(" ")[0] for h in d.history] == ["queued", "succeeded"]
    assert "died" in d.history[0]["outcome"] and d.history[1]["node"] != first_node
    assert job.result.training.resumed_from_step >= 20
    second = [e.step for e in q.progress_events(env.db, job_id, env.user) if e.attempt == 2 and e.step]
    assert second[0] > 20  # the second attempt started from the checkpoint, not from step 1
    vectors, _ = local_vectors(tmp_path, model, config, "uninterrupted")
    assert_same_vectors(adapter_vectors(env.data_dir, job_id), vectors)


# ----- serving on Ray ---------------------------------------------------------------------------
SERVE_TEMPLATE = {"name": "sentiment", "input": "{{text}} Was it good or bad?", "label_column": "label",
            "choices": ["bad", "good"]}
SERVE_TRAIN = [{"text": t, "label": l} for t, l in [("a wonderful film", "good"), ("dull and far too long", "bad"),
                                                ("I loved it", "good"), ("a waste of time", "bad")]]
SERVE_ROWS = [{"text": "a joy to watch"}, {"text": "the worst film this year"}, {"text": "fine"}]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_model_dir):
    """Two adapters of the tiny model, trained in this process (different seeds: different vectors)."""
    return _train_adapters(tmp_path_factory, tiny_model_dir, seeds=(0, 1))


def _train_adapters(tmp_path_factory, tiny_model_dir, seeds):
    from ia3app.config import RecipeConfig
    from ia3app.recipe.run_job import JobSpec, run_job
    from ia3app.templates.spec import TemplateSpec

    out = []
    for seed in seeds:
        root = tmp_path_factory.mktemp(f"adapter{seed}")
        spec = JobSpec(model=str(tiny_model_dir("t0")), template=TemplateSpec.from_dict(SERVE_TEMPLATE), eval_methods=[],
                       recipe=RecipeConfig(steps=2, batch_size=2, warmup_steps=0, seed=seed, max_length=64,
                                           checkpoint_every=0))
        run_job(spec, SERVE_TRAIN, None, work_dir=root / "work", out_dir=root / "adapter", progress=lambda e: None)
        out.append(root / "adapter")
    return out


@pytest.fixture(scope="module")
def serving(ray_cluster):
    from ray import serve

    from jobs.ray_serve import APP_NAME, RayServing

    client = RayServing(replicas=2, num_cpus=0, serving={"max_wait_ms": 1})  # CPUs stay free for training
    yield client
    client.close()
    serve.delete(APP_NAME)
    serve.shutdown()
    ray.kill(client.registry)


def test_replicas_answer_as_the_local_engine_does(serving, adapters):
    from ia3app.serving.engine import ServingEngine

    local = ServingEngine(max_wait_ms=1)
    try:
        for folder in adapters:
            remote = serving.predict(folder, SERVE_ROWS)
            expected = local.predict(folder, SERVE_ROWS)
            assert [p.choice for p in remote] == [p.choice for p in expected]
            for r, e in zip(remote, expected):
                assert r.label == e.label
                assert all(abs(r.probabilities[c] - e.probabilities[c]) <= 1e-5 for c in e.probabilities)
        futures = [serving.submit(adapters[i % 2], SERVE_ROWS[:1]) for i in range(8)]  # concurrent, both adapters
        assert all(len(f.result(timeout=60)) == 1 for f in futures)
    finally:
        local.close()
    assert serving.predict_csv(adapters[0], b"text\na joy\nawful\n").decode().splitlines()[0].startswith(
        "text,prediction,predicted_choice,prob_bad,prob_good")


def router_holders(serving, model_id: str) -> set[str]:
    """The replicas the client's Serve router knows to hold ``model_id``. A replica reports the
    adapters it loaded to the Serve controller, which tells the routers asynchronously (Ray Serve's
    router state; no public API shows it)."""
    request_router = serving.handle._router._asyncio_router.request_router
    return {r.unique_id for r in request_router._multiplexed_model_id_to_replica_ids.get(model_id, ())}


@pytest.fixture(scope="module")
def fresh_adapters(tmp_path_factory, tiny_model_dir):
    """Two adapters no other test sends requests for (so each is held by the one replica that loaded it:
    the module's other tests may have spread `adapters` over both replicas with concurrent requests)."""
    return _train_adapters(tmp_path_factory, tiny_model_dir, seeds=(10, 11))


def test_requests_go_to_the_replica_that_holds_their_adapter(serving, adapters, fresh_adapters):
    ids = [serving.model_id(a) for a in fresh_adapters]
    assert ids[0] != ids[1] and serving.model_id(fresh_adapters[0]) == ids[0]  # content id, registered once
    assert serving.model_id(adapters[0]) not in ids
    for folder, model_id in zip(fresh_adapters, ids):
        first = serving.where(folder)  # loads the adapter on one replica
        assert model_id in first["adapters"]
        # condition, not a fixed sleep: the router has learnt where the adapter is
        wait_for(lambda: router_holders(serving, model_id), f"the router knows who holds {model_id}")
        assert router_holders(serving, model_id) == {first["replica"]}
        seen = [serving.where(folder) for _ in range(6)]
        assert {s["replica"] for s in seen} == {first["replica"]}, seen  # all six on the replica that holds it
        assert all(model_id in s["adapters"] for s in seen)


def test_a_bad_row_is_the_callers_error(serving, adapters):
    with pytest.raises(UserError, match="text"):
        serving.predict(adapters[0], [{"review": "no such column"}])


def test_the_app_context_forwards_to_ray_when_the_backend_is_on(serving, adapters, tmp_path, ray_cluster):
    from jobs.ray_serve import RayServing
    from ui.context import AppContext

    ctx = AppContext(tmp_path / "data", ray_address=ray_cluster[0].address)
    engine = ctx.engine()
    assert isinstance(engine, RayServing)
    expected = [p.choice for p in serving.predict(adapters[1], SERVE_ROWS)]
    assert [p.choice for p in engine.predict(adapters[1], SERVE_ROWS)] == expected
    engine.close()
