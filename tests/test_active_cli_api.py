"""The active-learning loop's CLI and JSON API (issue 20 item 5): `python -m ia3app suggest` prints or writes
the rows to label next; `POST /v1/suggest` answers them for an adapter the key's owner holds (someone
else's adapter gets the same 404 as a missing one), with clear 4xx for bad input."""

from __future__ import annotations

import json

import pytest
from serving_helpers import WORDS, finished_jobs, make_adapter

from ia3app.cli.main import main
from ia3app.jobtypes import SuggestResult, dumps
from ia3app.tables import load_csv

POOL = [{"sentence": w} for w in WORDS] * 3


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    return make_adapter(tiny_model_dir("t0"), tmp_path_factory.mktemp("suggest") / "adapter", seed=5)


def write_pool(path, rows, label: bool = True):
    lines = ["sentence,label" if label else "sentence"] + [f'"{r["sentence"]}"' + ("," if label else "") for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_cli_prints_and_writes_the_suggestions(adapter, tmp_path, capsys):
    pool = write_pool(tmp_path / "pool.csv", POOL)
    assert main(["suggest", "--adapter", str(adapter), "--pool", pool, "--n", "3", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith(f"{n}. pool row ") for n, line in enumerate(lines, 1))
    assert "margin" in lines[0] and "scored 30 pool rows" in err and "k-center" in err
    assert main(["suggest", "--adapter", str(adapter), "--pool", pool, "--n", "3", "--device", "cpu",
                 "--out", str(tmp_path / "s.json")]) == 0
    result = SuggestResult.from_dict(json.loads((tmp_path / "s.json").read_text()))
    assert len(result.suggestions) == 3 and result.scored == 30
    assert [int(line.split()[3].rstrip(":")) for line in lines] == [s.index + 1 for s in result.suggestions]
    assert main(["suggest", "--adapter", str(adapter), "--pool", pool, "--n", "3", "--device", "cpu",
                 "--out", str(tmp_path / "s.csv")]) == 0
    table = load_csv(tmp_path / "s.csv")
    assert table.columns[:3] == ["rank", "pool_row", "margin"] and "sentence" in table.columns
    assert [int(r["pool_row"]) for r in table.rows] == [s.index + 1 for s in result.suggestions]


def test_cli_refuses_a_labelled_pool_and_a_bad_n(adapter, tmp_path, capsys):
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("sentence,label\ngreat,positive\n")
    assert main(["suggest", "--adapter", str(adapter), "--pool", str(labelled), "--device", "cpu"]) == 2
    assert "labels in column 'label'" in capsys.readouterr().err
    pool = write_pool(tmp_path / "pool.csv", POOL, label=False)
    assert main(["suggest", "--adapter", str(adapter), "--pool", pool, "--n", "0", "--device", "cpu"]) == 2
    assert "from 1 to 200" in capsys.readouterr().err


@pytest.fixture(scope="module")
def site(tiny_model_dir, tmp_path_factory):
    from fastapi.testclient import TestClient

    from storage import api_keys, repo, users
    from ui.context import AppContext
    from ui.http_api import serve_only_app

    ctx = AppContext(tmp_path_factory.mktemp("suggest-api"), auth_required=True, serving={"device": "cpu"})
    alice = users.create_user(ctx.db(), "alice", "alice-pass-1")
    bob = users.create_user(ctx.db(), "bob", "bob-pass-22")
    jobs = {"alice": finished_jobs(ctx, alice, tiny_model_dir("t0"), 1)[0],
            "bob": finished_jobs(ctx, bob, tiny_model_dir("t0"), 1, seed0=7)[0]}
    raw = b"sentence\n" + "".join(f"{r['sentence']}\n" for r in POOL).encode()
    pool = repo.save_dataset(ctx.db(), ctx.files(), alice, "pool", "pool.csv", raw, ["sentence"], POOL, kind="pool")
    keys = {who: api_keys.create_key(ctx.db(), who)[1] for who in ("alice", "bob")}
    with TestClient(serve_only_app(ctx)) as http:
        yield ctx, http, jobs, pool, keys
    ctx.engine().close()


def post(http, key, body):
    return http.post("/v1/suggest", json=body, headers={"Authorization": f"Bearer {key}"} if key else {})


def test_api_answers_the_owner_with_rows_or_a_stored_pool(site):
    ctx, http, jobs, pool, keys = site
    r = post(http, keys["alice"], {"job_id": jobs["alice"], "rows": POOL, "n": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["job_id"] == jobs["alice"] and body["scored"] == 30 and len(body["suggestions"]) == 4
    for s in body["suggestions"]:
        assert set(s) == {"index", "row", "margin", "top"} and len(s["top"]) == 2
        assert {t["label"] for t in s["top"]} == {"negative", "positive"}
    assert len({s["row"]["sentence"] for s in body["suggestions"]}) == 4  # no copies of one text
    from storage import repo

    repo.skip_pool_rows(ctx.db(), 1, pool, [0, 1])  # alice (user 1) skipped two rows: left out
    r = post(http, keys["alice"], {"job_id": jobs["alice"], "pool_id": pool})
    assert r.status_code == 200, r.text
    assert r.json()["scored"] == 28 and r.json()["excluded"] == 2 and len(r.json()["suggestions"]) == 8
    adapter_id = ctx.db().execute("SELECT id FROM adapters WHERE job = ?", [jobs["alice"]]).fetchone()[0]
    assert post(http, keys["alice"], {"adapter_id": adapter_id, "rows": POOL[:5], "n": 2}).status_code == 200


def test_api_answers_someone_elses_adapter_like_a_missing_one(site):
    _, http, jobs, pool, keys = site
    theirs = post(http, keys["bob"], {"job_id": jobs["alice"], "rows": POOL})
    missing = post(http, keys["bob"], {"job_id": 99999, "rows": POOL})
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"].replace(str(jobs["alice"]), "N") == missing.json()["error"].replace("99999", "N")
    their_pool = post(http, keys["bob"], {"job_id": jobs["bob"], "pool_id": pool})  # bob's adapter, alice's pool
    missing_pool = post(http, keys["bob"], {"job_id": jobs["bob"], "pool_id": 99999})
    assert their_pool.status_code == missing_pool.status_code == 404
    assert their_pool.json()["error"].replace(str(pool), "N") == missing_pool.json()["error"].replace("99999", "N")


@pytest.mark.parametrize("key, body, status, words", [
    (None, {"job_id": 1, "rows": POOL}, 401, "API key"),
    ("alice", {"job_id": 1}, 422, '"rows" or name one of your pools'),
    ("alice", {"job_id": 1, "rows": POOL, "pool_id": 1}, 422, "one of them"),
    ("alice", {"job_id": 1, "rows": POOL, "n": "8"}, 422, '"n" must be an integer'),
    ("alice", {"job_id": 1, "rows": POOL, "n": 0}, 422, "from 1 to 200"),
    ("alice", {"job_id": 1, "pool_id": "x"}, 422, '"pool_id" must be an integer'),
    ("alice", {"job_id": 1, "rows": [{"review": "x"}]}, 422, "column 'sentence'"),
])
def test_api_bad_requests_get_clear_errors(site, key, body, status, words):
    _, http, jobs, _, keys = site
    body = {**body, "job_id": jobs["alice"]}
    r = post(http, keys.get(key, key), body)
    assert r.status_code == status and words in r.json()["error"], r.text


def test_suggest_result_round_trips_through_json():
    result = SuggestResult.from_dict({"suggestions": [{"index": 2, "row": {"s": "x"}, "margin": 0.1, "top": []}],
                                      "scored": 5})
    assert SuggestResult.from_dict(json.loads(dumps(result))) == result


def test_cli_train_starts_from_an_adapters_vectors(adapter, tiny_model_dir, tmp_path):
    """The CLI's next round: train --init-adapter (lr 1e-6: the vectors stay where they started)."""
    import torch

    from ia3app.adapters.files import load_adapter

    csv = tmp_path / "train.csv"
    csv.write_text("sentence,label\n" + "".join(f"{w},{'positive' if i % 2 else 'negative'}\n"
                                               for i, w in enumerate(WORDS) if "," not in w))
    args = ["train", "--csv", str(csv), "--template", "sentiment", "--column", "text=sentence", "--model",
            str(tiny_model_dir("t0")), "--steps", "1", "--batch-size", "2", "--lr", "1e-6", "--quiet", "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "warm"), "--init-adapter", str(adapter)]) == 0
    start, _ = load_adapter(adapter)
    warm, _ = load_adapter(tmp_path / "warm")
    assert all(torch.allclose(warm[k], start[k], atol=1e-3) for k in start)
    assert any(not torch.allclose(start[k], torch.ones_like(start[k]), atol=0.1) for k in start)
