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
from pathlib import Path
from typing import Any

import sqlite_utils

from common.errors import UserError
from storage.db import fetch_one, row_dict, transaction
from storage.files import FileStore, new_key

DATASET_KINDS = ("labelled", "pool")


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
    kind: str = "labelled"
    """'labelled' (training or held-out rows) or 'pool' (unlabelled rows the active-learning loop suggests from)."""
    parent: int | None = None
    """A labelled version: the version it adds rows to. A pool: the first version of the dataset it goes with."""

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
    kind: str = "labelled",
    parent: int | None = None,
    marks: tuple[int, dict[int, str | None]] | None = None,
) -> int:
    """Store the original file and its parsed rows, then the row; returns the dataset id.

    Files first, then the row in one transaction; if the row cannot be written the files are
    removed, so a failure leaves neither half-written files nor an orphan row. ``marks``
    (pool id, {pool row index: label, or None when skipped}): the pool rows this new version
    labels, recorded in the same transaction (see save_version).
    """
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}")
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
                " sha256, label_column, created, kind, parent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [owner, name, filename, file_rel, rows_rel, json.dumps(columns), len(rows), len(raw),
                 hashlib.sha256(raw).hexdigest(), label_column, time.time(), kind, parent],
            )
            dataset_id = int(cursor.lastrowid)
            if marks is not None:
                _mark_pool_rows(db, owner, marks[0], marks[1], dataset_id)
            return dataset_id
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
                      rows: list[dict[str, Any]], kind: str = "labelled", parent: int | None = None) -> int | None:
    """The id of one of ``owner``'s datasets stored from the same bytes with the same label column and
    the same rows kept (so a re-upload of a file reuses it instead of storing another copy)."""
    cursor = db.execute("SELECT * FROM datasets WHERE owner = ? AND sha256 = ? AND bytes = ? ORDER BY id DESC",
                        [owner, hashlib.sha256(raw).hexdigest(), len(raw)])
    for row in cursor.fetchall():
        dataset = Dataset.from_row(row_dict(cursor, row))
        if dataset.kind == kind and dataset.parent == parent and dataset.label_column == label_column and dataset.row_count == len(rows) and \
                store.read_json(dataset.rows_path) == rows:
            return dataset.id
    return None


def list_datasets(db: sqlite_utils.Database, owner: int, kind: str | None = None) -> list[Dataset]:
    """``owner``'s datasets, newest first (of one kind, given one)."""
    rows = db.execute("SELECT * FROM datasets WHERE owner = ? AND (? IS NULL OR kind = ?) ORDER BY id DESC",
                      [owner, kind, kind])
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


# ----- the active-learning loop: versions, pools and the pool rows already labelled ------------------
def versions(db: sqlite_utils.Database, dataset_id: int, owner: int) -> list[Dataset]:
    """The version chain of one of ``owner``'s labelled datasets, first version first, up to this one
    (a parent deleted since ends the chain there)."""
    chain = [require_dataset(db, dataset_id, owner)]
    while chain[0].parent is not None and len(chain) < 10_000:
        parent = get_dataset(db, chain[0].parent, owner)
        if parent is None or parent.kind != "labelled":
            break
        chain.insert(0, parent)
    return chain


def latest_version(db: sqlite_utils.Database, dataset_id: int, owner: int) -> Dataset:
    """The newest version that descends from this one of ``owner``'s datasets (itself when none does)."""
    current = require_dataset(db, dataset_id, owner)
    while True:
        row = fetch_one(db, "SELECT * FROM datasets WHERE owner = ? AND parent = ? AND kind = 'labelled'"
                            " ORDER BY id DESC LIMIT 1", [owner, current.id])
        if row is None:
            return current
        current = Dataset.from_row(row)


def pools_for(db: sqlite_utils.Database, dataset_id: int, owner: int) -> list[Dataset]:
    """``owner``'s unlabelled pools that go with this dataset's version chain, newest first."""
    root = versions(db, dataset_id, owner)[0].id
    cursor = db.execute("SELECT * FROM datasets WHERE owner = ? AND kind = 'pool' AND parent = ? ORDER BY id DESC",
                        [owner, root])
    return [Dataset.from_row(row_dict(cursor, r)) for r in cursor.fetchall()]


def require_pool(db: sqlite_utils.Database, pool_id: int, owner: int) -> Dataset:
    pool = get_dataset(db, pool_id, owner)
    if pool is None or pool.kind != "pool":
        raise UserError(f"pool {pool_id} is not one of your unlabelled pools; upload it on the Label next page")
    return pool


def pool_marks(db: sqlite_utils.Database, pool_id: int, owner: int) -> dict[int, str | None]:
    """{pool row index: the label it was given, or None when it was skipped} for one of ``owner``'s pools."""
    rows = db.execute("SELECT row_index, label FROM pool_marks WHERE pool = ? AND owner = ?", [pool_id, owner])
    return {int(i): label for i, label in rows.fetchall()}


def skip_pool_rows(db: sqlite_utils.Database, owner: int, pool_id: int, indices: list[int]) -> None:
    """Record pool rows as skipped (suggestions leave them out) without a new version."""
    with transaction(db):
        _mark_pool_rows(db, owner, pool_id, {i: None for i in indices}, None)


def _mark_pool_rows(db: sqlite_utils.Database, owner: int, pool_id: int, marks: dict[int, str | None],
                    dataset_id: int | None) -> None:
    """Inside the caller's transaction."""
    pool = fetch_one(db, "SELECT row_count FROM datasets WHERE id = ? AND owner = ? AND kind = 'pool'",
                     [pool_id, owner])
    if pool is None:
        raise UserError(f"pool {pool_id} is not one of your unlabelled pools")
    bad = [i for i in marks if not 0 <= int(i) < pool["row_count"]]
    if bad:
        raise UserError(f"pool {pool_id} has {pool['row_count']} rows; no row {bad[0] + 1}")
    now = time.time()
    for index, label in marks.items():
        db.execute("INSERT OR REPLACE INTO pool_marks (pool, row_index, owner, label, dataset, created)"
                   " VALUES (?, ?, ?, ?, ?, ?)",
                   [pool_id, int(index), owner, label, dataset_id if label is not None else None, now])


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


def owns_adapter_dir(db: sqlite_utils.Database, root: Path, folder: Path, owner: int) -> bool:
    """Whether ``folder`` is a registered adapter folder of one of ``owner``'s jobs (inside the data directory ``root``)."""
    root = Path(root).resolve()
    full = Path(folder).resolve()
    if not full.is_relative_to(root):
        return False
    rel = full.relative_to(root).as_posix()
    return db.execute("SELECT 1 FROM adapters WHERE dir_path = ? AND owner = ?", [rel, owner]).fetchone() is not None
