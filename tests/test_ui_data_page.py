"""The data page's handlers, called directly: uploads saved with their split, bad files refused with a
specific message and nothing stored, the example files and the chosen text columns."""

from __future__ import annotations

import pytest

from ia3app.errors import UserError
from ia3app.jobtypes import DataRef, Holdout
from ui import data_page as U
from ui import template_page as T

from ui_calls import SST2_HEAD, ctx, users, write  # noqa: F401  (the app context and two users)


def count_datasets(ctx):
    return ctx.db().execute("select count(*) from datasets").fetchone()[0]


def test_upload_saves_training_data_with_an_automatic_split(ctx, users, tmp_path):
    path = write(tmp_path, "reviews.csv", SST2_HEAD)
    info = U.describe_file(path, ctx)
    assert info["columns"] == ["sentence", "label"] and info["label_column"] == "label"
    state = U.save_upload(ctx, users[0], path, "label", None, U.AUTO, None, 0.25, 0)
    assert state.holdout == Holdout(0.25, 0) and state.label_values == ["negative", "positive"]
    assert state.data_ref() == DataRef(state.dataset_id, None, Holdout(0.25, 0))
    assert "8 rows to train on, 4 held out" in U.split_summary(U.parse(path, ctx).rows, "label", 0.25, 0)
    assert count_datasets(ctx) == 1


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"\x00\x01\x02PK\x03\x04" * 50, "binary|not a text"),
    ("sentence,label\n" + "x,a\n" * 60, "row limit|limit"),
    ("sentence,label\nx,a\ny,\n", "blank"),
    ("sentence,label\nx,a\ny,a\n", "at least two"),
    ("s" * 30_000, "MB; the limit is"),
])
def test_bad_files_get_a_specific_message_and_nothing_is_stored(ctx, users, tmp_path, content, message):
    path = write(tmp_path, "bad.csv", content)
    with pytest.raises(UserError, match=message):
        U.save_upload(ctx, users[0], path, "label", None, U.NONE, None, 0.25, 0)
    assert count_datasets(ctx) == 0
    uploads = ctx.data_dir / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


def test_bad_held_out_file_stores_nothing(ctx, users, tmp_path):
    good = write(tmp_path, "train.csv", SST2_HEAD)
    bad = write(tmp_path, "held.csv", "review,label\nx,positive\n")
    with pytest.raises(UserError, match="held-out file lacks column"):
        U.save_upload(ctx, users[0], good, "label", None, U.SEPARATE, bad, 0.25, 0)
    assert count_datasets(ctx) == 0


@pytest.mark.parametrize("name", ["sst2_16shot_seed0.csv", "rte_32shot_seed0.csv", "copa_32shot_seed0.csv"])
def test_shared_files_upload_and_get_a_fitting_template(ctx, users, fewshot_dir, name):
    from storage import repo

    path = str(fewshot_dir / name)
    info = U.describe_file(path, ctx)
    state = U.save_upload(ctx, users[0], path, info["label_column"], None, U.AUTO, None, 0.25, 0)
    fitting = T.fitting_templates(state.columns, state.label_values, state.label_column)
    assert fitting, f"no built-in fits {name}"
    spec = next(iter(fitting.values()))
    rows = repo.load_rows(ctx.db(), ctx.files(), state.dataset_id, users[0])
    message, html, checked = T.check_template(rows, state.columns, state.label_column, spec.name,
                                              *T.fields_from_spec(spec))
    assert checked is not None, message
    assert html.count('class="correct"') == 4  # four preview rows, each with its answer marked


def test_chosen_text_columns_drive_the_built_ins(ctx, users, tmp_path):
    path = write(tmp_path, "mixed.csv", "id,review,stars\n" + "".join(
        f"{i},{'great' if i % 2 else 'awful'} film {i},{'positive' if i % 2 else 'negative'}\n" for i in range(8)))
    state = U.save_upload(ctx, users[0], path, "stars", None, U.NONE, None, 0.25, 0, ["review"])
    assert state.text_columns == ["review"]
    fitting = T.fitting_templates(state.text_columns + ["stars"], state.label_values, "stars")
    assert fitting and all("id" not in spec.columns_used() for spec in fitting.values())
    with pytest.raises(UserError, match="at least one text column"):
        U.save_upload(ctx, users[0], path, "stars", None, U.NONE, None, 0.25, 0, ["stars"])
