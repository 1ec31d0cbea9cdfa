"""Load: 200+ adapters on one tiny model, 16 client threads sending 1-4-row requests for random
adapters, through the engine and through the HTTP API. Every answer equals that adapter scored
alone (merged); none lost or mixed up; failing requests leave their neighbours alone; another
user's job id is refused exactly like a missing one."""

import random
import threading

import pytest
from apps import served
from serving_helpers import WORDS, Reference, finished_jobs

from ia3app.errors import UserError

N_ADAPTERS, CLIENTS, REQUESTS = 200, 16, 16
POOL = [{"sentence": w} for w in WORDS[:6]]
SIZES = dict(d_model=32, layers=1, heads=2, d_ff=32)  # small: 200 references are scored on a shared CPU
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tiny_model_dir, tmp_path_factory):
    from storage import api_keys, users
    from ui.context import AppContext

    base = tiny_model_dir("t0", **SIZES)
    ctx = AppContext(tmp_path_factory.mktemp("load-data"), auth_required=True,
                     serving={"device": "cpu", "max_wait_ms": 5})
    alice = users.create_user(ctx.db(), "alice", "alice-pass-1")
    bob = users.create_user(ctx.db(), "bob", "bob-pass-22")
    jobs = finished_jobs(ctx, alice, base, N_ADAPTERS)
    bobs = finished_jobs(ctx, bob, base, 2, seed0=1000)
    ref = Reference(base)
    want = {j: ref.score(ctx.files().adapter_dir(j), POOL) for j in jobs}
    keys = {who: api_keys.create_key(ctx.db(), who)[1] for who in ("alice", "bob")}
    yield ctx, jobs, bobs, want, keys
    ctx.engine().close()


def plan(seed: int, jobs: list[int]):
    """(kind, job, row indices) per request: mostly good, some bad rows, some missing adapters."""
    rng = random.Random(seed)
    out = []
    for _ in range(REQUESTS):
        kind = rng.choices(["good", "bad_row", "missing"], weights=[8, 1, 1])[0]
        out.append((kind, rng.choice(jobs), rng.sample(range(len(POOL)), rng.randint(1, 4))))
    return out


def check(pred_probs, pred_choice, ref) -> None:
    assert pred_probs == pytest.approx(ref.probs, abs=1e-5)
    assert pred_choice == ["bad", "good"][ref.pred]


def run_clients(fn):
    errors, done = [], []
    start = threading.Barrier(CLIENTS)

    def client(i):
        start.wait()
        try:
            done.append(fn(i))
        except BaseException as exc:  # re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    if errors:
        raise errors[0]
    return sum(done)


def test_engine_under_load(world):
    ctx, jobs, _, want, _ = world
    engine = ctx.engine()

    def client(i):
        answered = 0
        for kind, job, idx in plan(i, jobs):
            folder = ctx.files().adapter_dir(job)
            rows = [POOL[k] for k in idx]
            if kind == "bad_row":
                rows = rows + [{"review": "no sentence column"}]
            if kind == "missing":
                folder = folder.parent / "no-such-adapter"
            future = engine.submit(folder, rows)
            if kind == "good":
                preds = future.result(timeout=300)
                assert len(preds) == len(idx)
                for p, k in zip(preds, idx):
                    check(list(p.probabilities.values()), p.choice, want[job][k])
                answered += 1
            else:
                with pytest.raises(UserError, match="'sentence'" if kind == "bad_row" else "does not exist"):
                    future.result(timeout=300)
        return answered

    answered = run_clients(client)
    assert answered == sum(k == "good" for i in range(CLIENTS) for k, _, _ in plan(i, jobs))
    stats = engine.stats()["backbones"][0]
    assert stats["mixed_batches"] > 0 and stats["requests"] >= answered
    assert stats["resident_adapters"] == len({j for i in range(CLIENTS) for k, j, _ in plan(i, jobs) if k == "good"})


def test_http_api_under_load(world):
    import httpx

    from ui.http_api import serve_only_app

    ctx, jobs, bobs, want, keys = world

    def client(i):
        answered = 0
        with httpx.Client(base_url=url, timeout=300) as http:
            for n, (kind, job, idx) in enumerate(plan(100 + i, jobs)):
                rows = [POOL[k] for k in idx]
                key = keys["alice"]
                if kind == "bad_row":
                    rows = rows + [{"review": "no sentence column"}]
                if kind == "missing":  # bob asks for alice's job, or for one that does not exist
                    key, job = keys["bob"], (job if n % 2 else 10**6)
                r = http.post("/v1/predict", json={"job_id": job, "rows": rows},
                              headers={"Authorization": f"Bearer {key}"})
                if kind == "good":
                    assert r.status_code == 200, r.text
                    preds = r.json()["predictions"]
                    assert len(preds) == len(idx)
                    for p, k in zip(preds, idx):
                        check(list(p["probabilities"].values()), p["choice"], want[job][k])
                    answered += 1
                elif kind == "bad_row":
                    assert r.status_code == 422 and "'sentence'" in r.json()["error"]
                else:
                    assert r.status_code == 404
                    assert r.json()["error"] == f"job #{job} is not one of your jobs"
            # bob's own jobs answer him
            r = http.post("/v1/predict", json={"job_id": bobs[i % 2], "rows": POOL[:1]},
                          headers={"Authorization": f"Bearer {keys['bob']}"})
            assert r.status_code == 200
        return answered

    with served(serve_only_app(ctx)) as url:  # the predictions-only app under uvicorn
        answered = run_clients(client)
    assert answered == sum(k == "good" for i in range(CLIENTS) for k, _, _ in plan(100 + i, jobs))
    assert ctx.engine().stats()["backbones"][0]["mixed_batches"] > 0
