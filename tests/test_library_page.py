"""My datasets and runs: reuse of the same bytes, owner-only deletes refused while a job needs them,
run again with changes, side-by-side comparison."""

from __future__ import annotations

import pytest

from ia3app.config import RecipeConfig
from ia3app.errors import UserError
from jobs import queue
from ui import library_page as L
from ui import template_page as T
from ui import train_page as TR
from ui import data_page as U

from ui_calls import ctx, users  # noqa: F401  (the same app context and two users)

CSV = "sentence,label\n" + "".join(
    f"{'a fine film' if i % 2 else 'a dull mess'} number {i},{'positive' if i % 2 else 'negative'}\n" for i in range(12))


@pytest.fixture
def csv_path(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text(CSV)
    return str(path)


def count(ctx, table):
    return ctx.db().execute(f"select count(*) from {table}").fetchone()[0]


def submit(ctx, uid, state, steps=2):
    spec = next(iter(T.fitting_templates(state.columns, state.label_values, "label").values()))
    recipe = RecipeConfig(steps=steps, batch_size=2, warmup_steps=0, checkpoint_every=0)
    config = TR.build_job_config(ctx, uid, state, spec, "tiny-demo", "", recipe, False, "", TR.METHODS)
    return queue.submit(ctx.db(), uid, config)


def test_the_same_file_is_stored_once_per_user(ctx, users, csv_path):
    alice, bob = users
    first = U.save_upload(ctx, alice, csv_path, "label", None, U.AUTO, None, 0.25, 0)
    again = U.save_upload(ctx, alice, csv_path, "label", None, U.AUTO, None, 0.25, 0)
    assert again.dataset_id == first.dataset_id and again.reused and not first.reused
    assert count(ctx, "datasets") == 1
    sampled = U.save_upload(ctx, alice, csv_path, "label", 2, U.AUTO, None, 0.25, 0)  # other rows kept: a new one
    assert sampled.dataset_id != first.dataset_id
    theirs = U.save_upload(ctx, bob, csv_path, "label", None, U.AUTO, None, 0.25, 0)  # never shared across users
    assert theirs.dataset_id not in (first.dataset_id, sampled.dataset_id) and count(ctx, "datasets") == 3
    assert list(L.datasets_frame(ctx, alice)["dataset"]) == [sampled.dataset_id, first.dataset_id]


def test_a_dataset_in_use_is_kept_and_only_its_owner_deletes_it(ctx, users, csv_path):
    alice, bob = users
    state = U.save_upload(ctx, alice, csv_path, "label", None, U.AUTO, None, 0.25, 0)
    job_id = submit(ctx, alice, state)
    with pytest.raises(UserError, match=f"used by job\\(s\\) #{job_id}"):
        L.delete_dataset(ctx, alice, state.dataset_id)
    with pytest.raises(UserError, match="not one of your datasets"):
        L.delete_dataset(ctx, bob, state.dataset_id)
    with pytest.raises(UserError, match="cancel it first"):
        L.delete_job(ctx, alice, job_id)
    assert queue.cancel(ctx.db(), job_id, alice) == "cancelled"
    with pytest.raises(UserError, match="not one of your jobs"):
        L.delete_job(ctx, bob, job_id)
    files = [ctx.data_dir / p for p in ctx.db().execute("select file_path, rows_path from datasets").fetchone()]
    assert all(f.is_file() for f in files)
    assert "Deleted dataset" in L.delete_dataset(ctx, alice, state.dataset_id)
    assert count(ctx, "datasets") == 0 and not any(f.exists() for f in files)
    ctx.files().adapter_dir(job_id)  # a folder as a finished job leaves one
    assert "Deleted job" in L.delete_job(ctx, alice, job_id)
    assert count(ctx, "jobs") == 0 and not (ctx.data_dir / "adapters" / str(job_id)).exists()


def test_run_again_prefills_data_template_and_settings(ctx, users, csv_path):
    alice, bob = users
    state = U.save_upload(ctx, alice, csv_path, "label", None, U.AUTO, None, 0.25, 0)
    job_id = submit(ctx, alice, state, steps=7)
    prior = L.run_again(ctx, alice, job_id)
    assert prior.data.dataset_id == state.dataset_id and prior.data.holdout == state.holdout
    assert prior.data.label_values == state.label_values and prior.recipe.steps == 7
    assert prior.model == "tiny-demo" and prior.template.name and prior.data.stored_from == job_id == prior.job_id
    with pytest.raises(UserError, match="not one of your jobs"):
        L.run_again(ctx, bob, job_id)


def test_runs_compare_side_by_side(ctx, users, csv_path):
    alice, bob = users
    state = U.save_upload(ctx, alice, csv_path, "label", None, U.AUTO, None, 0.25, 0)
    a, b = submit(ctx, alice, state, steps=3), submit(ctx, alice, state, steps=5)
    table, curves = L.compare(ctx, alice, [a, b])
    assert f"job #{a}" in table and f"job #{b}" in table
    assert "| steps ◀ differs | 3 | 5 |" in table and "| batch_size | 2 | 2 |" in table
    assert list(curves.columns) == ["step", "loss", "run"]
    with pytest.raises(UserError, match="at least two"):
        L.compare(ctx, alice, [a])
    with pytest.raises(UserError, match="not one of your jobs"):
        L.compare(ctx, bob, [a, b])


def test_deletes_are_asked_first_naming_the_runs_a_dataset_delete_affects(ctx, users, csv_path):
    alice, bob = users
    state = U.save_upload(ctx, alice, csv_path, "label", None, U.AUTO, None, 0.25, 0)
    first, second = submit(ctx, alice, state), submit(ctx, alice, state)
    with pytest.raises(UserError, match=f"used by job\\(s\\) #{first}, #{second}"):  # queued: not even asked
        L.dataset_delete_question(ctx, alice, state.dataset_id)
    with pytest.raises(UserError, match="cancel it first"):
        L.job_delete_question(ctx, alice, first)
    for job in (first, second):
        assert queue.cancel(ctx.db(), job, alice) == "cancelled"
    question = L.dataset_delete_question(ctx, alice, state.dataset_id)
    assert f"2 runs used it: #{first}, #{second}" in question and "Run again with changes" in question
    assert "reviews.csv" in question and count(ctx, "datasets") == 1  # asking deletes nothing
    assert "Delete run" in L.job_delete_question(ctx, alice, first) and count(ctx, "jobs") == 2
    with pytest.raises(UserError, match="not one of your datasets"):
        L.dataset_delete_question(ctx, bob, state.dataset_id)
    L.delete_dataset(ctx, alice, state.dataset_id)
    with pytest.raises(UserError, match=f"job #{first}'s training data \\(dataset #{state.dataset_id}\\) was "
                                        "deleted, so Run again cannot fill it in: upload the file again"):
        L.run_again(ctx, alice, first)
    other = U.save_upload(ctx, alice, csv_path, "label", 2, U.AUTO, None, 0.25, 0)
    assert other.dataset_id > state.dataset_id  # never the deleted one's id: its runs would name this file
    with pytest.raises(UserError, match="was deleted"):
        L.run_again(ctx, alice, first)
    assert "No run used it" in L.dataset_delete_question(ctx, alice, other.dataset_id)
