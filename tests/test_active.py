"""The active-learning loop (issue 20): pools, suggestions (least sure, spread out), labelled rows saved as a
new dataset version, the next round warm- or fresh-started, rounds, the CLI and the JSON API — on the tiny
models, with a real worker running the suggest and training jobs in this process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ia3app import tables
from ia3app.config import RecipeConfig
from ia3app.errors import UserError
from ia3app.jobtypes import SuggestRequest, SuggestResult
from ia3app.serving.suggest import pick, suggest
from jobs import queue
from jobs.worker import Worker, WorkerConfig
from storage import repo
from ui import active_loop as A
from ui import data_page as U
from ui import template_page as T
from ui import train_page as TR

from ui_calls import ctx, users  # noqa: F401  (the same app context and two users)

ROOT = Path(__file__).resolve().parent.parent
SST2 = ROOT / "examples" / "sst2_16shot_seed0.csv"
POOL_SOURCE = ROOT / "examples" / "sst2_16shot_seed42.csv"


# ----- the rule: smallest margins, then farthest-point among them ---------------------------------
def test_pick_takes_the_least_sure_rows_when_they_are_spread_out():
    margins = [0.9, 0.1, 0.5, 0.05, 0.7, 0.2, 0.3, 0.8]
    vectors = np.eye(8)  # every row as far from every other: the rule reduces to the smallest margins
    assert pick(margins, vectors, 3) == [3, 1, 5]
    assert pick(margins, vectors, 3, factor=1) == [3, 1, 5]


def test_pick_passes_over_near_duplicates_of_a_chosen_row():
    # rows 0-3: the least sure, but four copies of one text (same representation); rows 4-5: others
    margins = [0.01, 0.011, 0.012, 0.013, 0.2, 0.3, 0.9, 0.95]
    vectors = np.array([[1, 0, 0]] * 4 + [[0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1]], dtype=float)
    chosen = pick(margins, vectors, 3)
    assert chosen[0] == 0 and set(chosen) == {0, 4, 5}  # one copy, then the farthest candidates
    assert sorted(pick(margins, vectors, 3, factor=1)) == [0, 1, 2]  # no room to diversify: margins alone
    assert pick(margins, vectors, 20) == list(np.argsort(margins, kind="stable"))  # fewer rows than asked


def test_pick_rule_is_scale_free():
    rng = np.random.default_rng(0)
    margins, vectors = rng.random(40), rng.normal(size=(40, 8))
    assert pick(margins, vectors, 6) == pick(margins, vectors * rng.uniform(0.1, 10, size=(40, 1)), 6)


# ----- the pool's checks ---------------------------------------------------------------------------
def table(text: str) -> tables.Table:
    return tables.load_csv(text.encode())


def test_pool_rows_keep_the_datasets_columns_and_refuse_labels():
    rows = tables.pool_rows(table("sentence,label,extra\na,,x\nb,,y\n"), ["sentence", "label"], "label")
    assert rows == [{"sentence": "a"}, {"sentence": "b"}]
    assert tables.pool_rows(table("sentence\na\n"), ["sentence", "label"], "label") == [{"sentence": "a"}]
    with pytest.raises(UserError, match="lacks column\\(s\\) premise"):
        tables.pool_rows(table("sentence\na\n"), ["premise", "sentence", "label"], "label")
    with pytest.raises(UserError, match="labels in column 'label' on 1 row \\(row 2\\)"):
        tables.pool_rows(table("sentence,label\na,\nb,positive\n"), ["sentence", "label"], "label")
    with pytest.raises(UserError, match="row 2 of the unlabelled file has no text in any of premise, hypothesis"):
        tables.pool_rows(table("premise,hypothesis,id\na,b,1\n , ,2\n"), ["premise", "hypothesis", "label"], "label")


# ----- through the serving engine: representations from the same forward ---------------------------
@pytest.mark.parametrize("kind", ["t0", "gpt2"])
def test_suggest_through_the_engine_spreads_over_duplicates(tiny_model_dir, tmp_path, kind):
    sys.path.insert(0, str(Path(__file__).parent))
    from serving_helpers import WORDS, make_adapter

    from ia3app.serving.engine import ServingEngine

    adapter = make_adapter(tiny_model_dir(kind), tmp_path / "adapter", seed=3)
    engine = ServingEngine(device="cpu", max_wait_ms=0)
    try:
        rows = [{"sentence": w} for w in WORDS] * 4  # every text four times
        plain = engine.predict(adapter, rows[:3])
        embedded = engine.predict(adapter, rows[:3], embed=True)
        assert all(p.embedding is None for p in plain) and len(embedded[0].embedding) > 8
        for p, q in zip(embedded, plain):  # the scores are those of a plain prediction (up to merging's rounding)
            assert p.scores == pytest.approx(q.scores, abs=1e-5)
        assert embedded[0].embedding == pytest.approx(engine.predict(adapter, rows[:1], embed=True)[0].embedding,
                                                      abs=1e-5)  # a row's representation does not depend on its batch
        result = suggest(engine, adapter, rows, 4, exclude={0, 10, 20, 30}, chunk_rows=7)
        texts = [s.row["sentence"] for s in result.suggestions]
        assert len(texts) == 4 and len(set(texts)) == 4  # no two copies of one text
        assert result.scored == 36 and result.excluded == 4 and WORDS[0] not in texts
        for s in result.suggestions:
            first, second = s.top
            assert first["probability"] >= second["probability"]
            assert s.margin == pytest.approx(first["probability"] - second["probability"])
            assert {first["label"], second["label"]} == {"negative", "positive"}
            assert {first["choice"], second["choice"]} == {"bad", "good"}
        margins = sorted(s.margin for s in result.suggestions)
        all_margins = sorted(min(p.probabilities.values()) for p in engine.predict(adapter, rows))
        assert margins[0] <= 1 - 2 * all_margins[-1] + 1e-6  # the least sure row of all is among them
        assert json.loads(json.dumps(result.to_dict())) == SuggestResult.from_dict(result.to_dict()).to_dict()
        with pytest.raises(UserError, match="from 1 to 200"):
            suggest(engine, adapter, rows, 0)
        with pytest.raises(UserError, match="every one of the pool's 2 rows is labelled or skipped"):
            suggest(engine, adapter, rows[:2], 2, exclude={0, 1})
    finally:
        engine.close()


# ----- the loop in the app: pool, suggest job, new version, next round -------------------------------
def run_worker(ctx) -> None:
    Worker(WorkerConfig(data_dir=ctx.data_dir, device="cpu", until_empty=True, poll_s=0.1)).serve()


def first_round(ctx, uid, tmp_path, lr: float = 3e-3) -> int:
    path = tmp_path / "train.csv"
    path.write_bytes(SST2.read_bytes())
    state = U.save_upload(ctx, uid, str(path), "label", None, U.AUTO, None, 0.25, 0)
    spec = next(iter(T.fitting_templates(state.columns, state.label_values, "label").values()))
    recipe = RecipeConfig(steps=2, batch_size=2, warmup_steps=0, checkpoint_every=0, lr=lr)
    config = TR.build_job_config(ctx, uid, state, spec, "tiny-demo", "", recipe, False, "", ["t-few"])
    job_id = queue.submit(ctx.db(), uid, config)
    run_worker(ctx)
    assert queue.get_job(ctx.db(), job_id, uid).status == "succeeded"
    return job_id


def pool_file(tmp_path, with_label_column: bool = True) -> str:
    source = tables.load_csv(POOL_SOURCE.read_bytes())
    rows = [{"sentence": r["sentence"], **({"label": ""} if with_label_column else {})} for r in source.rows]
    path = tmp_path / "unlabelled.csv"
    path.write_bytes(tables.write_csv(rows, ["sentence", "label"] if with_label_column else ["sentence"]))
    return str(path)


@pytest.mark.slow
def test_a_round_suggests_saves_a_new_version_and_retrains_from_the_previous_vectors(ctx, users, tmp_path):
    from ia3app.adapters.files import load_adapter

    alice, bob = users
    job_id = first_round(ctx, alice, tmp_path, lr=1e-6)
    first_dataset = queue.get_job(ctx.db(), job_id, alice).request.data.dataset_id
    before = repo.load_rows(ctx.db(), ctx.files(), first_dataset, alice)

    pool_id = A.upload_pool(ctx, alice, job_id, pool_file(tmp_path))
    assert A.upload_pool(ctx, alice, job_id, pool_file(tmp_path)) == pool_id  # the same file again: reused
    assert repo.require_pool(ctx.db(), pool_id, alice).row_count == 32
    suggest_id = A.start_suggest(ctx, alice, job_id, pool_id, 8)
    assert queue.get_job(ctx.db(), suggest_id, alice) is None  # not a training job: lists and pages leave it out
    run_worker(ctx)
    job = A.suggest_job(ctx, alice, suggest_id)
    assert job.status == "succeeded" and len(job.result.suggestions) == 8 and job.result.scored == 32
    events = queue.progress_events(ctx.db(), suggest_id, alice)
    assert [e.step for e in events if e.phase == "score"][-1] == 32

    # label five, skip one, leave two: a new version with 5 more rows; the old one is untouched
    picks = {s.index: ("positive" if n % 2 else "negative") for n, s in enumerate(job.result.suggestions[:5])}
    skipped = job.result.suggestions[5].index
    picks[skipped] = A.SKIP
    with pytest.raises(UserError, match="'maybe' .* is not one of the task's labels: negative, positive"):
        A.save_labels(ctx, alice, suggest_id, {job.result.suggestions[0].index: "maybe"})
    version = A.save_labels(ctx, alice, suggest_id, picks)
    assert repo.load_rows(ctx.db(), ctx.files(), first_dataset, alice) == before
    new_rows = repo.load_rows(ctx.db(), ctx.files(), version, alice)
    assert len(new_rows) == len(before) + 5 and new_rows[: len(before)] == before
    assert [d.id for d in repo.versions(ctx.db(), version, alice)] == [first_dataset, version]
    marks = repo.pool_marks(ctx.db(), pool_id, alice)
    assert marks[skipped] is None and len(marks) == 6

    pending = A.rounds(ctx, alice, job_id)[-1]
    assert (pending["status"], pending["labels added"], pending["version"]) == ("not trained yet", 5, "v2")

    # the next suggestions leave out what was labelled or skipped
    again = A.start_suggest(ctx, alice, job_id, pool_id, 8)
    run_worker(ctx)
    result = A.suggest_job(ctx, alice, again).result
    assert result.scored == 26 and result.excluded == 6 and not set(marks) & {s.index for s in result.suggestions}

    # make the first round's vectors far from ones, then retrain warm and fresh with a tiny learning rate
    import torch
    from safetensors.torch import save_file

    folder = ctx.files().adapter_dir(job_id)
    vectors, _ = load_adapter(folder)
    g = torch.Generator().manual_seed(0)
    trained = {k: 1 + 0.5 * torch.randn(v.shape, generator=g) for k, v in vectors.items()}
    save_file(trained, str(folder / "adapter.safetensors"))
    warm = A.retrain(ctx, alice, job_id, warm=True)
    fresh = A.retrain(ctx, alice, job_id, warm=False)
    for new in (warm, fresh):
        request = queue.get_job(ctx.db(), new, alice).request
        assert request.data.dataset_id == version and request.spec.template == queue.get_job(
            ctx.db(), job_id, alice).request.spec.template
    run_worker(ctx)
    warm_vectors, _ = load_adapter(ctx.files().adapter_dir(warm))
    fresh_vectors, _ = load_adapter(ctx.files().adapter_dir(fresh))
    for key, start in trained.items():
        assert torch.allclose(warm_vectors[key], start, atol=1e-3)  # lr 1e-6: where it started
        assert torch.allclose(fresh_vectors[key], torch.ones_like(start), atol=1e-3)
    assert any("previous round" in (e.message or "") for e in queue.progress_events(ctx.db(), warm, alice))

    table_rows = A.rounds(ctx, alice, warm)
    assert [r["job"] for r in table_rows] == [job_id, warm, fresh]
    assert [r["labels added"] for r in table_rows] == [0, 5, 5]
    assert [r["start"] for r in table_rows] == ["fresh", "previous round's vectors", "fresh"]
    assert all("% CI" in r["accuracy (95 % CI)"] for r in table_rows)

    # another user: every id reads as missing
    with pytest.raises(UserError, match="not one of your jobs"):
        A.start_suggest(ctx, bob, job_id, pool_id, 8)
    with pytest.raises(UserError, match="not one of yours"):
        A.save_labels(ctx, bob, suggest_id, picks)
    with pytest.raises(UserError, match="not one of your jobs"):
        A.retrain(ctx, bob, job_id)


def test_pool_upload_and_suggest_refusals(ctx, users, tmp_path):
    alice, bob = users
    job_id = first_round(ctx, alice, tmp_path)
    bad = tmp_path / "labelled.csv"
    bad.write_text("sentence,label\ngreat,positive\n")
    with pytest.raises(UserError, match="labels in column 'label'"):
        A.upload_pool(ctx, alice, job_id, str(bad))
    bad.write_text("review\ngreat\n")
    with pytest.raises(UserError, match="lacks column\\(s\\) sentence"):
        A.upload_pool(ctx, alice, job_id, str(bad))
    bad.write_text("sentence,label\n\"a,b\n")
    with pytest.raises(UserError):
        A.upload_pool(ctx, alice, job_id, str(bad))
    pool_id = A.upload_pool(ctx, alice, job_id, pool_file(tmp_path, with_label_column=False))
    with pytest.raises(UserError, match="not one of your unlabelled pools"):
        A.start_suggest(ctx, alice, job_id, 999, 8)
    with pytest.raises(UserError, match="not one of your jobs"):
        A.start_suggest(ctx, bob, job_id, pool_id, 8)
    with pytest.raises(UserError, match="from 1 to 200"):
        A.start_suggest(ctx, alice, job_id, pool_id, 0)
    with pytest.raises(UserError, match="not one of your jobs"):
        A.upload_pool(ctx, bob, job_id, pool_file(tmp_path))
    # a suggest job whose adapter job is not the owner's fails with words, not a crash
    bob_job = queue.submit(ctx.db(), bob, SuggestRequest(adapter_job=job_id, pool_id=pool_id, n=2))
    run_worker(ctx)
    failed = queue.get_job(ctx.db(), bob_job, bob, kind="suggest")
    assert failed.status == "failed" and "not one of your finished training jobs" in failed.error_message


def test_a_suggest_job_is_cancelled_between_chunks(ctx, users, tmp_path, monkeypatch, wait_for):
    from ia3app.serving import suggest as S

    alice, _ = users
    job_id = first_round(ctx, alice, tmp_path)
    pool_id = A.upload_pool(ctx, alice, job_id, pool_file(tmp_path))
    suggest_id = A.start_suggest(ctx, alice, job_id, pool_id, 4)
    monkeypatch.setattr(S, "SCORE_CHUNK_ROWS", 4)  # 8 chunks; the owner cancels after the first
    real = S.score_pool

    def cancel_after_first_chunk(*args, progress=None, should_stop=None, **kwargs):
        def on_chunk(done, total):
            progress(done, total)
            if done == 4:  # the owner cancels; the next chunk starts once the worker has seen it
                assert queue.cancel(ctx.db(), suggest_id, alice) == "running"
                wait_for(should_stop, "the worker to see the cancel")

        return real(*args, progress=on_chunk, should_stop=should_stop, **{**kwargs, "chunk_rows": 4})

    monkeypatch.setattr(S, "score_pool", cancel_after_first_chunk)
    run_worker(ctx)
    job = A.suggest_job(ctx, alice, suggest_id)
    assert job.status == "cancelled" and job.result is None
    steps = [e.step for e in queue.progress_events(ctx.db(), suggest_id, alice) if e.phase == "score"]
    assert steps and max(steps) < 32


def test_the_ray_dispatcher_leaves_suggest_jobs_to_a_local_worker(ctx, users):
    alice, _ = users
    suggest_id = queue.submit(ctx.db(), alice, SuggestRequest(adapter_job=1, pool_id=1))
    assert queue.claim(ctx.db(), "ray", kinds=("train",)) is None
    claimed = queue.claim(ctx.db(), "local")
    assert claimed.id == suggest_id and claimed.kind == "suggest" and isinstance(claimed.request, SuggestRequest)


def test_m007_keeps_existing_datasets_and_jobs_as_labelled_and_training(tmp_path):
    import sqlite_utils

    from jobfactory import request
    from ia3app.jobtypes import dumps
    from storage.migrations import MIGRATIONS, migrate

    db = sqlite_utils.Database(memory=True)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    for fn in MIGRATIONS[:6]:  # a database from before the loop, with a dataset and a queued job
        fn(db)
        db.execute("INSERT INTO _migrations VALUES (?, 0)", [fn.__name__])
    db.execute("INSERT INTO users (name, password_hash, created) VALUES ('a', 'x', 0)")
    db.execute("INSERT INTO datasets (owner, name, filename, file_path, rows_path, columns, row_count, bytes, sha256,"
               " created) VALUES (1, 'd', 'd.csv', 'u/1', 'u/1.rows', '[]', 3, 10, '', 0)")
    db.execute("INSERT INTO jobs (owner, config, created, job_key) VALUES (1, ?, 0, 'k')", [dumps(request())])
    assert migrate(db) == [fn.__name__ for fn in MIGRATIONS[6:]] and MIGRATIONS[6].__name__ == "m007_active_learning"
    assert db.execute("SELECT kind, parent FROM datasets").fetchall() == [("labelled", None)]
    job = queue.claim(db, "w", kinds=("train",))
    assert job.kind == "train" and job.request == request()


def test_a_suggest_only_worker_leaves_training_jobs_queued(ctx, users):
    """With the Ray backend the app runs a local worker for suggest jobs only (--kinds suggest)."""
    from jobfactory import request

    alice, _ = users
    train_id = queue.submit(ctx.db(), alice, request())
    suggest_id = queue.submit(ctx.db(), alice, SuggestRequest(adapter_job=train_id, pool_id=1))
    Worker(WorkerConfig(data_dir=ctx.data_dir, device="cpu", until_empty=True, poll_s=0.1,
                        kinds=("suggest",))).serve()
    assert queue.get_job(ctx.db(), train_id, alice).status == "queued"
    done = queue.get_job(ctx.db(), suggest_id, alice, kind="suggest")
    assert done.status == "failed" and f"job #{train_id} is not one of your finished training jobs" in done.error_message
