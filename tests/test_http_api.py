"""The JSON prediction API and its API keys: owner-only answers, the same 404 for someone else's job
as for a missing one, clear 4xx for bad input, revoked keys refused, the users CLI."""

import subprocess
import sys
from pathlib import Path

import pytest
from serving_helpers import Reference, finished_jobs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tiny_model_dir, tmp_path_factory):
    from fastapi.testclient import TestClient

    from storage import api_keys, users
    from ui.context import AppContext
    from ui.http_api import serve_only_app

    ctx = AppContext(tmp_path_factory.mktemp("api-data"), auth_required=True, serving={"device": "cpu"})
    alice = users.create_user(ctx.db(), "alice", "alice-pass-1")
    users.create_user(ctx.db(), "bob", "bob-pass-22")
    jobs = finished_jobs(ctx, alice, tiny_model_dir("t0"), 2)
    keys = {who: api_keys.create_key(ctx.db(), who)[1] for who in ("alice", "bob")}
    with TestClient(serve_only_app(ctx)) as http:
        yield ctx, http, jobs, keys
    ctx.engine().close()


def post(http, key, body):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return http.post("/v1/predict", json=body, headers=headers)


def test_owner_gets_the_adapters_answers(site, tiny_model_dir):
    ctx, http, jobs, keys = site
    rows = [{"sentence": "a fine film"}, {"sentence": "a dull mess"}]
    r = post(http, keys["alice"], {"job_id": jobs[0], "rows": rows})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["job_id"] == jobs[0] and len(body["predictions"]) == 2
    want = Reference(tiny_model_dir("t0")).score(ctx.files().adapter_dir(jobs[0]), rows)
    for pred, ref in zip(body["predictions"], want):
        assert set(pred) == {"label", "choice", "probabilities", "confidence", "unsure"}
        assert list(pred["probabilities"].values()) == pytest.approx(ref.probs, abs=1e-5)
        assert pred["choice"] == ["bad", "good"][ref.pred] and pred["label"] in ("negative", "positive")
    adapter_id = ctx.db().execute("SELECT id FROM adapters WHERE job = ?", [jobs[1]]).fetchone()[0]
    r = post(http, keys["alice"], {"adapter_id": adapter_id, "rows": rows[:1]})
    assert r.status_code == 200 and r.json()["job_id"] == jobs[1]


def test_someone_elses_job_is_answered_like_a_missing_one(site):
    _, http, jobs, keys = site
    theirs = post(http, keys["bob"], {"job_id": jobs[0], "rows": [{"sentence": "x"}]})
    missing = post(http, keys["bob"], {"job_id": 99999, "rows": [{"sentence": "x"}]})
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"].replace(str(jobs[0]), "N") == missing.json()["error"].replace("99999", "N")


@pytest.mark.parametrize("key, body, status, words", [
    (None, {"job_id": 1, "rows": [{"sentence": "x"}]}, 401, "API key"),
    ("ia3_deadbeef_nope", {"job_id": 1, "rows": [{"sentence": "x"}]}, 401, "API key"),
    ("alice", {"rows": [{"sentence": "x"}]}, 422, "job_id"),
    ("alice", {"job_id": "1", "rows": [{"sentence": "x"}]}, 422, "integer"),
    ("alice", {"job_id": 1, "rows": []}, 422, "non-empty"),
    ("alice", {"job_id": 1, "rows": [{"sentence": {"nested": 1}}]}, 422, "row 1"),
    ("alice", {"job_id": 1, "rows": [{"review": "x"}]}, 422,
     "column 'sentence' used by the template is not in the rows sent; the rows sent have: review"),  # no "file"
    ("alice", [1, 2], 422, "JSON object"),
])
def test_bad_requests_get_clear_errors(site, key, body, status, words):
    _, http, jobs, keys = site
    if isinstance(body, dict) and body.get("job_id") == 1:
        body = {**body, "job_id": jobs[0]}
    r = post(http, keys.get(key, key), body)
    assert r.status_code == status and words in r.json()["error"], r.text
    assert "file" not in r.json()["error"], r.text  # a JSON request has no file (issue 23)


def test_body_size_limit(site):
    ctx, http, jobs, keys = site
    big = [{"sentence": "x" * 1000}] * (ctx.max_upload_bytes // 1000 + 10)
    r = post(http, keys["alice"], {"job_id": jobs[0], "rows": big})
    assert r.status_code == 413


def test_keys_through_the_users_cli(site, capsys):
    from storage.users import main

    ctx, http, jobs, _ = site
    cli = ["--data-dir", str(ctx.data_dir), "key"]
    assert main(cli + ["create", "alice", "--name", "ci"]) == 0
    made = capsys.readouterr()
    key = made.out.strip()
    assert key.startswith("ia3_") and "shown only now" in made.err
    stored = ctx.db().execute("SELECT key_hash FROM api_keys").fetchall()
    assert all(key not in row[0] for row in stored)  # only hashes are stored
    assert post(http, key, {"job_id": jobs[0], "rows": [{"sentence": "ok"}]}).status_code == 200
    assert main(cli + ["list", "alice"]) == 0
    listing = capsys.readouterr().out
    assert "\tci\t" in listing and key not in listing and "active" in listing
    assert main(cli + ["revoke", key.split("_")[1]]) == 0
    assert post(http, key, {"job_id": jobs[0], "rows": [{"sentence": "ok"}]}).status_code == 401
    assert main(cli + ["create", "nobody"]) == 2
    assert "no user named 'nobody'" in capsys.readouterr().err


def test_the_users_cli_runs_as_a_module(site):
    ctx, _, _, _ = site
    out = subprocess.run([sys.executable, "-m", "storage.users", "--data-dir", str(ctx.data_dir), "key", "list"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "alice" in out and "bob" in out
