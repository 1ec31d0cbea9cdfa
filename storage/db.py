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
    except sqlite3.DatabaseError as exc:
        if not isinstance(exc, sqlite3.OperationalError) or "malformed" in str(exc) or "not a database" in str(exc):
            raise corrupt_database(path, exc) from exc
        if "unable to open" not in str(exc) and "readonly" not in str(exc):
            raise  # e.g. locked past the busy timeout: not the directory's fault
        raise StorageError(
            f"could not open the database in {path}: {exc}; make sure the data directory exists, is a directory "
            "and is writable, or point IA3APP_DATA_DIR (or --data-dir) elsewhere"
        ) from exc
    except OSError as exc:
        raise StorageError(
            f"could not open the database in {path}: {getattr(exc, 'strerror', None) or exc}; make sure the data "
            "directory exists, is a directory and is writable, or point IA3APP_DATA_DIR (or --data-dir) elsewhere"
        ) from exc


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) owner-only (0700); an existing folder is left as the operator set it."""
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask


def _db_file(path: str | Path) -> Path:
    path = Path(path)
    return path / DB_FILENAME if path.is_dir() or path.suffix == "" else path


def file_identity(path: str | Path) -> tuple[int, int] | None:
    """(device, inode) of the database file, or None when it is gone: a connection compares it to the
    one it opened to notice a deleted or replaced database (a restored backup, a removed data dir)."""
    try:
        st = os.stat(_db_file(path))
    except OSError:
        return None
    return st.st_dev, st.st_ino


def vanished_database(path: str | Path) -> StorageError:
    db_file = _db_file(path)
    return StorageError(
        f"the database {db_file} is gone: the data directory {db_file.parent} was deleted or moved while the app "
        "was running. Nothing more is written until it is back: restore it (or its backup) and restart the app "
        "and its workers"
    )


def replaced_database(path: str | Path) -> StorageError:
    db_file = _db_file(path)
    return StorageError(
        f"the database {db_file} was replaced while the app was running (a restored backup?); nothing more is "
        f"written to either file. Stop the app and every worker, remove {db_file}-wal and {db_file}-shm (they "
        "belong to the file that was replaced), then start again"
    )


def corrupt_database(path: str | Path, exc: BaseException) -> StorageError:
    """The message for a database SQLite cannot read, with the steps to recover."""
    db_file = _db_file(path)
    return StorageError(
        f"the database {db_file} is damaged ({exc}). To recover: 1) stop the app and every worker; "
        f"2) keep a copy: cp {db_file} {db_file}.damaged; 3) try SQLite's recovery: "
        f"sqlite3 {db_file}.damaged .recover | sqlite3 {db_file}.recovered, then move {db_file}.recovered to "
        f"{db_file} (and delete {db_file}-wal and {db_file}-shm); 4) or restore a backup; or move the file "
        "away to start with an empty database (users and jobs are lost; files stay: "
        "python -m storage.admin list-stale)"
    )


def check_database(path: str | Path) -> None:
    """Refuse (StorageError with the recovery steps) a database whose pages SQLite cannot read."""
    db = open_db(path)
    try:
        result = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise corrupt_database(path, exc) from exc
    finally:
        db.conn.close()
    if result != "ok":
        raise corrupt_database(path, RuntimeError(f"quick_check: {result}"))


def _open(path: str | Path, busy_timeout_s: float) -> sqlite_utils.Database:
    if str(path) != ":memory:":
        path = Path(path)
        if path.is_dir() or path.suffix == "":
            make_private_dir(path)
            path = path / DB_FILENAME
        else:
            make_private_dir(path.parent)
        if not path.exists():  # owner-only from the start; SQLite gives its -wal and -shm files the same mode
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
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
