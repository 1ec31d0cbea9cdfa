"""Append-only, named schema migrations (the simonw/llm pattern).

Never edit or reorder a migration that has shipped: add a new ``mNNN_...`` function below the
last one. Each runs once, inside the same ``BEGIN IMMEDIATE`` transaction that records its name
in ``_migrations``, so two processes opening a fresh database at once cannot both apply it.

Timestamps are REAL Unix seconds (``time.time()``): leases and ETAs are plain arithmetic.
JSON columns hold ``json.dumps`` text.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlite_utils

MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = []


def migration(fn: Callable[[sqlite_utils.Database], None]) -> Callable[[sqlite_utils.Database], None]:
    MIGRATIONS.append(fn)
    return fn


def applied(db: sqlite_utils.Database) -> list[str]:
    if "_migrations" not in db.table_names():
        return []
    return [row[0] for row in db.execute("SELECT name FROM _migrations ORDER BY rowid")]


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply every migration not yet recorded; returns the names applied now."""
    done_now = []
    for fn in MIGRATIONS:
        # One transaction per migration: the check and the apply are atomic across processes.
        if not db.conn.in_transaction:
            db.conn.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
            already = db.execute("SELECT 1 FROM _migrations WHERE name = ?", [fn.__name__]).fetchone()
            if not already:
                fn(db)
                db.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", [fn.__name__, time.time()])
                done_now.append(fn.__name__)
        except BaseException:
            db.conn.execute("ROLLBACK")
            raise
        db.conn.execute("COMMIT")
    return done_now


@migration
def m001_initial(db: sqlite_utils.Database) -> None:
    # Statement by statement: executescript() would COMMIT the surrounding transaction first.
    for statement in _M001.split(";\n"):
        if statement.strip():
            db.execute(statement)


_M001 = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE datasets (
    id INTEGER PRIMARY KEY,
    owner INTEGER NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    filename TEXT NOT NULL,
    file_path TEXT NOT NULL,
    rows_path TEXT NOT NULL,
    columns TEXT NOT NULL,
    row_count INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    label_column TEXT,
    created REAL NOT NULL
);
CREATE INDEX datasets_owner ON datasets(owner, id);
CREATE TABLE templates (
    id INTEGER PRIMARY KEY,
    owner INTEGER NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    UNIQUE (owner, name)
);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    owner INTEGER NOT NULL REFERENCES users(id),
    status TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    config TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 3,
    worker_id TEXT,
    heartbeat_at REAL,
    lease_expires_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error_kind TEXT,
    error_message TEXT,
    result TEXT
);
CREATE INDEX jobs_claim ON jobs(status, priority DESC, id);
CREATE INDEX jobs_owner ON jobs(owner, id);
CREATE TABLE progress (
    id INTEGER PRIMARY KEY,
    job INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    step INTEGER,
    total_steps INTEGER,
    phase TEXT,
    loss REAL,
    loss_lm REAL,
    loss_ul REAL,
    loss_ln REAL,
    lr REAL,
    examples_per_s REAL,
    elapsed_s REAL,
    eta_s REAL,
    message TEXT,
    created REAL NOT NULL
);
CREATE INDEX progress_job ON progress(job, id);
CREATE TABLE adapters (
    id INTEGER PRIMARY KEY,
    job INTEGER NOT NULL UNIQUE REFERENCES jobs(id) ON DELETE CASCADE,
    owner INTEGER NOT NULL REFERENCES users(id),
    dir_path TEXT NOT NULL,
    params_base INTEGER,
    params_added INTEGER,
    bytes INTEGER,
    created REAL NOT NULL
);
CREATE TABLE evaluations (
    id INTEGER PRIMARY KEY,
    job INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    method TEXT NOT NULL,
    accuracy REAL,
    macro_f1 REAL,
    latency_ms REAL,
    flops REAL,
    metrics TEXT NOT NULL,
    created REAL NOT NULL,
    UNIQUE (job, method)
)
"""


@migration
def m002_api_keys(db: sqlite_utils.Database) -> None:
    """Per-user API keys for the JSON prediction API: only a SHA-256 of each key is stored."""
    db.execute(
        "CREATE TABLE api_keys ("
        " id INTEGER PRIMARY KEY,"
        " owner INTEGER NOT NULL REFERENCES users(id),"
        " name TEXT NOT NULL,"
        " prefix TEXT NOT NULL UNIQUE,"
        " key_hash TEXT NOT NULL,"
        " created REAL NOT NULL,"
        " last_used REAL,"
        " revoked REAL)"
    )
    db.execute("CREATE INDEX api_keys_owner ON api_keys(owner, id)")


@migration
def m003_results_stored_once(db: sqlite_utils.Database) -> None:
    # A finished job's results live in jobs.result only (ia3app.jobtypes.JobResult). The evaluations
    # table repeated part of them and nothing read it: dropped. The adapters table stays as the
    # register of published adapters (the id the prediction API accepts), without the figures it
    # copied from the result (parameter counts, bytes).
    db.execute("DROP TABLE IF EXISTS evaluations")
    db.execute(
        "CREATE TABLE adapters_new ("
        " id INTEGER PRIMARY KEY,"
        " job INTEGER NOT NULL UNIQUE REFERENCES jobs(id) ON DELETE CASCADE,"
        " owner INTEGER NOT NULL REFERENCES users(id),"
        " dir_path TEXT NOT NULL,"
        " created REAL NOT NULL)"
    )
    db.execute("INSERT INTO adapters_new (id, job, owner, dir_path, created)"
               " SELECT id, job, owner, dir_path, created FROM adapters")
    db.execute("DROP TABLE adapters")
    db.execute("ALTER TABLE adapters_new RENAME TO adapters")


@migration
def m004_job_key(db: sqlite_utils.Database) -> None:
    """A random key per job: its checkpoint and adapter folders are bound to it (a `.job-key` file), so
    a job never resumes or overwrites another job's state when ids repeat (a restored or new database)."""
    db.execute("ALTER TABLE jobs ADD COLUMN job_key TEXT")
    db.execute("UPDATE jobs SET job_key = lower(hex(randomblob(16))) WHERE job_key IS NULL")


@migration
def m005_speed_probes(db: sqlite_utils.Database) -> None:
    """Requests for a worker to time a few training steps of a model (jobs.probes): the train page's
    estimate, measured by a worker instead of the web process. One row per (model, batch size, precision)."""
    db.execute(
        "CREATE TABLE speed_probes ("
        " id INTEGER PRIMARY KEY,"
        " model TEXT NOT NULL,"
        " batch_size INTEGER NOT NULL,"
        " precision TEXT NOT NULL,"
        " max_length INTEGER NOT NULL,"
        " status TEXT NOT NULL,"
        " requested REAL NOT NULL,"
        " worker_id TEXT,"
        " started REAL,"
        " finished REAL,"
        " overhead_s REAL,"
        " per_token_s REAL,"
        " per_pair_s REAL,"
        " points TEXT,"
        " message TEXT,"
        " UNIQUE (model, batch_size, precision))"
    )


@migration
def m006_dataset_ids_never_reused(db: sqlite_utils.Database) -> None:
    """Dataset ids are never handed out twice. A job names its data by dataset id; without AUTOINCREMENT,
    SQLite gave the next upload the id of the newest dataset once that was deleted, so "Run again" of a
    run whose data had been deleted silently filled in another file of the same user (issue 23)."""
    db.execute(
        "CREATE TABLE datasets_new ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " owner INTEGER NOT NULL REFERENCES users(id),"
        " name TEXT NOT NULL,"
        " filename TEXT NOT NULL,"
        " file_path TEXT NOT NULL,"
        " rows_path TEXT NOT NULL,"
        " columns TEXT NOT NULL,"
        " row_count INTEGER NOT NULL,"
        " bytes INTEGER NOT NULL,"
        " sha256 TEXT NOT NULL,"
        " label_column TEXT,"
        " created REAL NOT NULL)"
    )
    db.execute("INSERT INTO datasets_new SELECT id, owner, name, filename, file_path, rows_path, columns, row_count,"
               " bytes, sha256, label_column, created FROM datasets")
    db.execute("DROP TABLE datasets")
    db.execute("ALTER TABLE datasets_new RENAME TO datasets")
    db.execute("CREATE INDEX datasets_owner ON datasets(owner, id)")


@migration
def m007_active_learning(db: sqlite_utils.Database) -> None:
    """The active-learning loop (issue 20): datasets get a kind ('labelled', or 'pool': unlabelled rows to
    suggest from) and a parent (a labelled version's previous version; a pool's labelled dataset); jobs
    get a kind ('train' or 'suggest'); pool_marks records each pool row labelled or skipped, and in which
    dataset version, so suggestions leave them out."""
    db.execute("ALTER TABLE datasets ADD COLUMN kind TEXT NOT NULL DEFAULT 'labelled'")
    db.execute("ALTER TABLE datasets ADD COLUMN parent INTEGER")  # no foreign key: deleting a parent is allowed
    db.execute("ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'train'")
    db.execute("DROP INDEX jobs_claim")
    db.execute("CREATE INDEX jobs_claim ON jobs(status, kind, priority DESC, id)")
    db.execute(
        "CREATE TABLE pool_marks ("
        " pool INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,"
        " row_index INTEGER NOT NULL,"
        " owner INTEGER NOT NULL REFERENCES users(id),"
        " label TEXT,"  # NULL: skipped
        " dataset INTEGER REFERENCES datasets(id) ON DELETE CASCADE,"  # the version that added it (NULL: skipped)
        " created REAL NOT NULL,"
        " PRIMARY KEY (pool, row_index))"
    )


@migration
def m008_probe_scoring(db: sqlite_utils.Database) -> None:
    """The speed probe also measures what a job pays besides training steps (issue 23): the model's load time
    and the cost of a scoring batch (evaluation), from points at several lengths (JSON, as `points`).
    Probes done before have neither and are taken again."""
    db.execute("ALTER TABLE speed_probes ADD COLUMN load_s REAL")
    db.execute("ALTER TABLE speed_probes ADD COLUMN score_points TEXT")
