"""Serving on Ray: the serving engine as Ray Serve replicas on the session's test cluster (two
worker nodes), requests routed by adapter (Serve multiplexing), answers equal to the local engine."""

import time

import pytest

ray = pytest.importorskip("ray")

from ia3app.errors import UserError  # noqa: E402

pytestmark = pytest.mark.slow
TEMPLATE = {"name": "sentiment", "input": "{{text}} Was it good or bad?", "label_column": "label",
            "choices": ["bad", "good"]}
TRAIN = [{"text": t, "label": l} for t, l in [("a wonderful film", "good"), ("dull and far too long", "bad"),
                                                ("I loved it", "good"), ("a waste of time", "bad")]]
ROWS = [{"text": "a joy to watch"}, {"text": "the worst film this year"}, {"text": "fine"}]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_model_dir):
    """Two adapters of the tiny model, trained in this process (different seeds: different vectors)."""
    from ia3app.pipeline import JobSpec, run_job

    out = []
    for seed in (0, 1):
        root = tmp_path_factory.mktemp(f"adapter{seed}")
        spec = JobSpec(model=str(tiny_model_dir("t0")), template=TEMPLATE, eval_methods=[],
                       recipe={"steps": 2, "batch_size": 2, "warmup_steps": 0, "seed": seed, "max_length": 64,
                               "checkpoint_every": 0})
        run_job(spec, TRAIN, None, work_dir=root / "work", out_dir=root / "adapter", progress=lambda e: None)
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
    from ia3app.serving import ServingEngine

    local = ServingEngine(max_wait_ms=1)
    try:
        for folder in adapters:
            remote = serving.predict(folder, ROWS)
            expected = local.predict(folder, ROWS)
            assert [p.choice for p in remote] == [p.choice for p in expected]
            for r, e in zip(remote, expected):
                assert r.label == e.label
                assert all(abs(r.probabilities[c] - e.probabilities[c]) <= 1e-5 for c in e.probabilities)
        futures = [serving.submit(adapters[i % 2], ROWS[:1]) for i in range(8)]  # concurrent, both adapters
        assert all(len(f.result(timeout=60)) == 1 for f in futures)
    finally:
        local.close()
    assert serving.predict_csv(adapters[0], b"text\na joy\nawful\n").decode().splitlines()[0].startswith(
        "text,prediction,predicted_choice,prob_bad,prob_good")


def test_requests_go_to_the_replica_that_holds_their_adapter(serving, adapters):
    ids = [serving.model_id(a) for a in adapters]
    assert ids[0] != ids[1] and serving.model_id(adapters[0]) == ids[0]  # content id, registered once
    for folder in adapters:
        serving.where(folder)
    time.sleep(2)  # replicas report the adapters they loaded; routers learn it asynchronously
    for folder, model_id in zip(adapters, ids):
        seen = [serving.where(folder) for _ in range(6)]
        assert len({s["replica"] for s in seen}) == 1, seen  # all six on one replica
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
    assert [p.choice for p in engine.predict(adapters[1], ROWS)] == [p.choice for p in serving.predict(adapters[1], ROWS)]
    engine.close()
