"""Issue 22 items 1 and 5 on the JSON API: nothing heavy on the event loop, each request bounded (rows,
bytes, render time in all) with a worded 413/422, users served in turn by the engine's batcher, the key
checked before the body is read, 4xx (never 500) for malformed requests."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from apps import served
from serving_helpers import finished_jobs

from ia3app.templates.spec import TemplateSpec

SLOW = TemplateSpec(
    name="slow", choices=["bad", "good"],
    input="{% for i in range(1000) %}{% for j in range(200) %}{% endfor %}{% endfor %}{{ sentence }} Good or bad?")


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """The predictions-only app on a real server (uvicorn, one event loop), alice with a fast and a slow adapter."""
    from storage import api_keys, users
    from ui.context import AppContext
    from ui.http_api import serve_only_app

    ctx = AppContext(tmp_path_factory.mktemp("abuse-data"), auth_required=True, serving={"device": "cpu"},
                     api_max_rows=50, api_max_render_s=2.0)
    alice = users.create_user(ctx.db(), "alice", "alice-pass-1")
    fast = finished_jobs(ctx, alice, tiny_model_dir("t0"), 1)[0]
    slow = finished_jobs(ctx, alice, tiny_model_dir("t0"), 1, seed0=5, template=SLOW)[0]
    key = api_keys.create_key(ctx.db(), "alice")[1]
    with served(serve_only_app(ctx)) as url:
        yield ctx, url, key, fast, slow
    ctx.engine().close()


def post(url, key, body, **kw):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(f"{url}/v1/predict", content=data, headers={**headers, "Content-Type": "application/json"},
                      timeout=300, **kw)


def test_slow_rows_run_off_the_event_loop_and_are_refused_past_the_requests_render_time(server):
    """300 rows of a template that takes a while a row froze every other request for minutes (rendered on
    the event loop). Now the loop answers /v1/health while the rows render, and the request is refused with
    words once its rows have used the request's render time (api_max_render_s, CPU seconds)."""
    ctx, url, key, _, slow = server
    answer: dict = {}
    rows = [{"sentence": f"row {i}"} for i in range(ctx.api_max_rows)]
    heavy = threading.Thread(target=lambda: answer.update(r=post(url, key, {"job_id": slow, "rows": rows})))
    heavy.start()
    healthy_while_busy = 0
    while heavy.is_alive():
        if httpx.get(f"{url}/v1/health", timeout=300).status_code == 200 and heavy.is_alive():
            healthy_while_busy += 1
    heavy.join()
    r = answer["r"]
    assert r.status_code == 422, r.text
    assert "take more than 2 s in all to render (the limit for one request)" in r.json()["error"]
    assert healthy_while_busy > 0  # the loop answered while the heavy request was still rendering


def test_too_many_rows_get_413_that_names_the_limit(server):
    ctx, url, key, fast, _ = server
    r = post(url, key, {"job_id": fast, "rows": [{"sentence": "x"}] * (ctx.api_max_rows + 1)})
    assert r.status_code == 413
    assert f"the limit is {ctx.api_max_rows:,} rows per request (--api-max-rows)" in r.json()["error"]


def test_the_key_is_checked_before_the_body_is_read(server):
    """100k-deep JSON without a key was parsed first and crashed the parser (500): now 401; with a key, 422."""
    _, url, key, _, _ = server
    deep = "[" * 100_000 + "]" * 100_000
    r = post(url, None, deep)
    assert r.status_code == 401 and "API key" in r.json()["error"]
    r = post(url, key, deep)
    assert r.status_code == 422 and "nested too deeply" in r.json()["error"]


@pytest.mark.parametrize("ident", [2**63, 2**64 + 5, -1, 0, 10**30])
def test_ids_out_of_range_are_no_ones_job(server, ident):
    _, url, key, _, _ = server
    for kind in ("job_id", "adapter_id"):
        r = post(url, key, {kind: ident, "rows": [{"sentence": "x"}]})
        assert r.status_code == 404 and "is not one of your" in r.json()["error"], r.text


def test_an_ordinary_request_still_answers(server):
    _, url, key, fast, _ = server
    r = post(url, key, {"job_id": fast, "rows": [{"sentence": "a fine film"}, {"sentence": "a dull mess"}]})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2


def test_users_are_served_in_turn_so_many_rows_do_not_hold_the_engine(tiny_model_dir, tmp_path):
    """One user's 400 rows (200 batches of 2) queued first; another user's one row, queued after, is
    answered while most of the first user's rows still wait (first come first served answered it last)."""
    from serving_helpers import make_adapter

    from ia3app.serving.engine import ServingEngine

    folder = make_adapter(tiny_model_dir("t0"), tmp_path / "a", seed=1)
    engine = ServingEngine(device="cpu", max_batch_rows=2, max_wait_ms=0)
    try:
        engine.predict(folder, [{"sentence": "warm up"}])
        many = engine.submit(folder, [{"sentence": f"row {i}"} for i in range(400)], client="mallory")
        one = engine.submit(folder, [{"sentence": "my one row"}], client="alice")
        assert len(one.result(timeout=300)) == 1
        assert not many.done()  # alice did not wait behind mallory's 200 batches
        assert engine.stats()["backbones"][0]["rows"] < 200
        assert len(many.result(timeout=600)) == 400
    finally:
        engine.close()
