"""Opening the app's SQLite database: WAL, foreign keys, a busy timeout, migrations applied.

Every connection is in driver autocommit mode (``isolation_level=None``) so that transactions
are explicit: writes that must be atomic go through :func:`transaction`, which starts with
``BEGIN IMMEDIATE`` — the write lock is taken up front, so two processes never both read a
row and then race to update it, and a waiting writer is retried by SQLite's busy handler
instead of failing with "database is locked".
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlite_utils

from storage.files import StorageError
from storage.migrations import migrate

DB_FILENAME = "ia3app.db"
BUSY_TIMEOUT_S = 30.0
"""How long a writer waits for another writer's lock before SQLite gives up."""


def data_dir() -> Path:
    """The one data directory: ``$IA3APP_DATA_DIR``, default ``./data``."""
    return Path(os.environ.get("IA3APP_DATA_DIR") or "data")


def open_db(path: str | Path | None = None, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> sqlite_utils.Database:
    """Open (creating if needed) the database at ``path`` and bring its schema up to date.

    ``path`` may be the database file, a data directory (the file ``ia3app.db`` inside it), or
    None for ``data_dir()``. ``":memory:"`` gives a private in-memory database (tests).
    """
    if path is None:
        path = data_dir()
    try:
        return _open(path, busy_timeout_s)
    except (OSError, sqlite3.OperationalError) as exc:
        if isinstance(exc, sqlite3.OperationalError) and "unable to open" not in str(exc) and "readonly" not in str(exc):
            raise  # e.g. locked past the busy timeout: not the directory's fault
        raise StorageError(
            f"could not open the database in {path}: {getattr(exc, 'strerror', None) or exc}; make sure the data "
            "directory exists, is a directory and is writable, or point IA3APP_DATA_DIR (or --data-dir) elsewhere"
        ) from exc


def _open(path: str | Path, busy_timeout_s: float) -> sqlite_utils.Database:
    if str(path) != ":memory:":
        path = Path(path)
        if path.is_dir() or path.suffix == "":
            path.mkdir(parents=True, exist_ok=True)
            path = path / DB_FILENAME
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
    # A transaction belongs to its connection: give each thread its own (the worker's heartbeat
    # thread and the web app's handler threads do). check_same_thread=False only lets a connection
    # be closed or handed over from another thread.
    conn = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    if str(path) != ":memory:":
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # safe with WAL: a crash loses no committed txn's integrity
    db = sqlite_utils.Database(conn)
    migrate(db)
    return db


@contextlib.contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """One write transaction taken with ``BEGIN IMMEDIATE``; commits on success, rolls back on error.

    Nested use (already inside a transaction) becomes a savepoint via sqlite-utils' ``atomic``.
    """
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    else:
        db.conn.execute("COMMIT")


def fetch_one(db: sqlite_utils.Database, sql: str, params: list[Any]) -> dict[str, Any] | None:
    """The first row of a query as a {column: value} dict, or None."""
    cursor = db.execute(sql, params)
    row = cursor.fetchone()
    return row_dict(cursor, row) if row is not None else None


def row_dict(cursor, row) -> dict[str, Any]:
    """One fetched row as a {column: value} dict."""
    return {d[0]: v for d, v in zip(cursor.description, row)}
