"""Data kept as a Hugging Face dataset (issue 23 item 12): a save_to_disk folder, parquet and JSON-lines
files the test builds are read through `datasets`, checked exactly as the same CSV (limits and words), and
stored as the user's dataset; a Hub name offline says what works instead."""

from __future__ import annotations

import pytest

from ia3app.errors import UserError
from ia3app.hf_datasets import OFFLINE, dataset_as_csv
from ia3app.tables import load_csv

datasets = pytest.importorskip("datasets")

ROWS = {"sentence": ["a fine film", "a dull mess", "great fun", "so boring"], "label": [1, 0, 1, 0]}


def labelled() -> "datasets.Dataset":
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    return datasets.Dataset.from_dict(ROWS, features=features)


def test_a_save_to_disk_folder_reads_as_its_csv_with_label_names(tmp_path):
    datasets.DatasetDict({"train": labelled(), "test": labelled()}).save_to_disk(str(tmp_path / "ds"))
    name, raw = dataset_as_csv(str(tmp_path / "ds"))
    assert name == "ds.csv"
    table = load_csv(raw)
    assert table.columns == ["sentence", "label"]
    assert [r["label"] for r in table.rows] == ["positive", "negative", "positive", "negative"]  # ClassLabel names
    with pytest.raises(UserError, match="has the splits train, test; name one of them .there is no split 'dev'."):
        dataset_as_csv(str(tmp_path / "ds"), split="dev")
    assert load_csv(dataset_as_csv(str(tmp_path / "ds"), split="test")[1]).rows == table.rows


def test_parquet_and_json_lines_files_read_the_same(tmp_path):
    labelled().to_parquet(str(tmp_path / "rows.parquet"))
    datasets.Dataset.from_dict(ROWS).to_json(str(tmp_path / "rows.jsonl"))
    parquet = load_csv(dataset_as_csv(str(tmp_path / "rows.parquet"))[1])
    jsonl = load_csv(dataset_as_csv(str(tmp_path / "rows.jsonl"))[1])
    assert [r["sentence"] for r in parquet.rows] == [r["sentence"] for r in jsonl.rows] == ROWS["sentence"]
    assert [r["label"] for r in jsonl.rows] == ["1", "0", "1", "0"]  # plain integers stay as written
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(UserError, match="bad.jsonl cannot be read as json"):
        dataset_as_csv(str(tmp_path / "bad.jsonl"))


def test_limits_and_words_are_the_csvs(tmp_path):
    wide = {f"c{i}": ["x"] for i in range(205)}
    datasets.Dataset.from_dict(wide).save_to_disk(str(tmp_path / "wide"))
    with pytest.raises(UserError) as from_csv:
        load_csv(",".join(wide).encode() + b"\n" + b"x," * 204 + b"x\n")
    with pytest.raises(UserError) as got:
        load_csv(dataset_as_csv(str(tmp_path / "wide"))[1])
    assert str(got.value) == str(from_csv.value)  # the same refusal, word for word
    with pytest.raises(UserError, match="the dataset has 4 rows; the limit is 3 rows"):
        dataset_as_csv(_saved(tmp_path), max_rows=3)
    datasets.Dataset.from_dict({"text": ["a"], "tags": [["x", "y"]]}).save_to_disk(str(tmp_path / "nested"))
    with pytest.raises(UserError, match="column 'tags' holds list values, not one text or label per row"):
        dataset_as_csv(str(tmp_path / "nested"))


def _saved(tmp_path) -> str:
    labelled().save_to_disk(str(tmp_path / "four"))
    return str(tmp_path / "four")


def test_offline_hub_names_and_server_paths_are_refused_with_what_works(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError) as got:
        dataset_as_csv("glue", config="sst2")
    assert str(got.value) == OFFLINE and "save_to_disk" in OFFLINE and "JSON-lines" in OFFLINE
    with pytest.raises(UserError, match="only in single-user mode"):
        dataset_as_csv(_saved(tmp_path), local_ok=False)
    with pytest.raises(UserError, match="name a dataset"):
        dataset_as_csv("  ")


def test_a_parquet_upload_is_checked_and_stored_as_the_users_dataset(tmp_path, monkeypatch):
    from storage import repo, users
    from ui import data_page as U
    from ui.context import AppContext

    monkeypatch.setenv("IA3APP_DATA_DIR", str(tmp_path / "data"))
    ctx = AppContext(tmp_path / "data", max_upload_bytes=20_000, max_rows=50)
    uid = users.create_user(ctx.db(), "alice", "correct horse 1")
    labelled().to_parquet(str(tmp_path / "reviews.parquet"))
    state = U.save_upload(ctx, uid, str(tmp_path / "reviews.parquet"), "label", None, U.NONE, None, .25, 0)
    assert repo.load_rows(ctx.db(), ctx.files(), state.dataset_id, uid) == [
        {"sentence": s, "label": ["negative", "positive"][y]} for s, y in zip(ROWS["sentence"], ROWS["label"])]
    small = AppContext(tmp_path / "data", max_upload_bytes=20_000, max_rows=3)
    with pytest.raises(UserError, match="the dataset has 4 rows; the limit is 3 rows"):
        U.save_upload(small, uid, str(tmp_path / "reviews.parquet"), "label", None, U.NONE, None, .25, 0)


def test_cli_reads_a_dataset_folder_and_its_split(tmp_path, capsys):
    from ia3app.cli.main import main

    datasets.DatasetDict({"train": labelled(), "validation": labelled()}).save_to_disk(str(tmp_path / "ds"))
    assert main(["templates", "--dataset", str(tmp_path / "ds"), "--dataset-split", "validation"]) == 0
    out = capsys.readouterr().out
    assert "sentiment" in out and "a fine film" in out
