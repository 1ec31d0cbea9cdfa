"""Rows users own: datasets, saved templates and the register of published adapters (a finished
job's results are the job's own: jobs.queue).

Every read takes the owner's user id: asking for another user's object by id gives ``None``
(the ``require_*`` variants raise one :class:`UserError` that reads the same whether the id
does not exist or belongs to someone else, so ids leak nothing).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from common.errors import UserError
from storage.db import fetch_one, row_dict, transaction
from storage.files import FileStore, new_key


@dataclass
class Dataset:
    id: int
    owner: int
    name: str
    filename: str
    """The name the user uploaded it under (shown only; never used to build a path)."""
    columns: list[str]
    row_count: int
    bytes: int
    sha256: str
    label_column: str | None
    created: float
    file_path: str
    """Relative path of the original upload in the file store."""
    rows_path: str
    """Relative path of the parsed rows (a JSON list of {column: value})."""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Dataset":
        return cls(**{**row, "columns": json.loads(row["columns"])})


def save_dataset(
    db: sqlite_utils.Database,
    store: FileStore,
    owner: int,
    name: str,
    filename: str,
    raw: bytes,
    columns: list[str],
    rows: list[dict[str, Any]],
    label_column: str | None = None,
) -> int:
    """Store the original file and its parsed rows, then the row; returns the dataset id.

    Files first, then the row in one transaction; if the row cannot be written the files are
    removed, so a failure leaves neither half-written files nor an orphan row.
    """
    columns = [str(c) for c in columns]
    if label_column is not None and label_column not in columns:
        raise UserError(f"label column {label_column!r} is not one of the columns: {', '.join(columns)}")
    key = new_key()
    file_rel = store.upload_path(key, ".orig")
    rows_rel = store.upload_path(key, ".rows.json")
    written: list[str] = []
    try:
        store.write_bytes(file_rel, raw)
        written.append(file_rel)
        store.write_json(rows_rel, rows)
        written.append(rows_rel)
        with transaction(db):
            cursor = db.execute(
                "INSERT INTO datasets (owner, name, filename, file_path, rows_path, columns, row_count, bytes,"
                " sha256, label_column, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [owner, name, filename, file_rel, rows_rel, json.dumps(columns), len(rows), len(raw),
                 hashlib.sha256(raw).hexdigest(), label_column, time.time()],
            )
            return int(cursor.lastrowid)
    except BaseException:
        for rel in written:
            store.remove(rel)
        raise


def get_dataset(db: sqlite_utils.Database, dataset_id: int, owner: int) -> Dataset | None:
    row = fetch_one(db, "SELECT * FROM datasets WHERE id = ? AND owner = ?", [dataset_id, owner])
    return Dataset.from_row(row) if row else None


def require_dataset(db: sqlite_utils.Database, dataset_id: int, owner: int) -> Dataset:
    dataset = get_dataset(db, dataset_id, owner)
    if dataset is None:
        raise UserError(f"dataset {dataset_id} not found among your datasets; upload it again or pick another")
    return dataset


def load_rows(db: sqlite_utils.Database, store: FileStore, dataset_id: int, owner: int) -> list[dict[str, Any]]:
    """The parsed rows of one of ``owner``'s datasets."""
    return store.read_json(require_dataset(db, dataset_id, owner).rows_path)


def find_same_dataset(db: sqlite_utils.Database, store: FileStore, owner: int, raw: bytes, label_column: str | None,
                      rows: list[dict[str, Any]]) -> int | None:
    """The id of one of ``owner``'s datasets stored from the same bytes with the same label column and
    the same rows kept (so a re-upload of a file reuses it instead of storing another copy)."""
    cursor = db.execute("SELECT * FROM datasets WHERE owner = ? AND sha256 = ? AND bytes = ? ORDER BY id DESC",
                        [owner, hashlib.sha256(raw).hexdigest(), len(raw)])
    for row in cursor.fetchall():
        dataset = Dataset.from_row(row_dict(cursor, row))
        if dataset.label_column == label_column and dataset.row_count == len(rows) and \
                store.read_json(dataset.rows_path) == rows:
            return dataset.id
    return None


def list_datasets(db: sqlite_utils.Database, owner: int) -> list[Dataset]:
    rows = db.execute("SELECT * FROM datasets WHERE owner = ? ORDER BY id DESC", [owner])
    return [Dataset.from_row(row_dict(rows, r)) for r in rows.fetchall()]


def delete_dataset(db: sqlite_utils.Database, store: FileStore, dataset_id: int, owner: int) -> bool:
    """Remove one of ``owner``'s datasets (row first, then its files); False if it is not theirs."""
    dataset = get_dataset(db, dataset_id, owner)
    if dataset is None:
        return False
    with transaction(db):
        db.execute("DELETE FROM datasets WHERE id = ? AND owner = ?", [dataset_id, owner])
    store.remove(dataset.file_path)
    store.remove(dataset.rows_path)
    return True


# ----- templates ---------------------------------------------------------------------------------
def save_template(db: sqlite_utils.Database, owner: int, name: str, spec: dict[str, Any]) -> int:
    """Save (or overwrite, by name) one of ``owner``'s templates; returns its id."""
    name = name.strip()
    if not name:
        raise UserError("give the template a name before saving it")
    now = time.time()
    with transaction(db):
        db.execute(
            "INSERT INTO templates (owner, name, spec, created, updated) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (owner, name) DO UPDATE SET spec = excluded.spec, updated = excluded.updated",
            [owner, name, json.dumps(spec), now, now],
        )
        return int(db.execute("SELECT id FROM templates WHERE owner = ? AND name = ?", [owner, name]).fetchone()[0])


def get_template(db: sqlite_utils.Database, template_id: int, owner: int) -> dict[str, Any] | None:
    row = fetch_one(db, "SELECT * FROM templates WHERE id = ? AND owner = ?", [template_id, owner])
    return {**row, "spec": json.loads(row["spec"])} if row else None


def list_templates(db: sqlite_utils.Database, owner: int) -> list[dict[str, Any]]:
    cursor = db.execute("SELECT * FROM templates WHERE owner = ? ORDER BY name", [owner])
    return [{**d, "spec": json.loads(d["spec"])} for d in (row_dict(cursor, r) for r in cursor.fetchall())]


def delete_template(db: sqlite_utils.Database, template_id: int, owner: int) -> bool:
    with transaction(db):
        return db.execute("DELETE FROM templates WHERE id = ? AND owner = ?", [template_id, owner]).rowcount > 0


# ----- published adapters (the register; their figures are the job's result) --------------------
def register_adapter(db: sqlite_utils.Database, job_id: int, owner: int, dir_path: str) -> int:
    """Record the adapter folder of a finished job (inside the caller's transaction); returns its id."""
    db.execute("INSERT OR REPLACE INTO adapters (job, owner, dir_path, created) VALUES (?, ?, ?, ?)",
               [job_id, owner, dir_path, time.time()])
    return int(db.execute("SELECT id FROM adapters WHERE job = ?", [job_id]).fetchone()[0])


def adapter_job(db: sqlite_utils.Database, adapter_id: int, owner: int) -> int | None:
    """The job id of one of ``owner``'s adapters, or None (also for another user's adapter id)."""
    row = db.execute("SELECT job FROM adapters WHERE id = ? AND owner = ?", [adapter_id, owner]).fetchone()
    return int(row[0]) if row else None
