"""storage/: migrations, connection settings, the atomic file store, owner-scoped datasets/templates."""

import errno
import os

import pytest
import sqlite_utils

from ia3app.errors import UserError
from storage import repo
from storage.db import data_dir, open_db, transaction
from storage.files import FileStore, StorageError
from storage.migrations import MIGRATIONS, applied, migrate
from storage.users import create_user


def test_migrations_build_every_table_with_its_columns():
    db = sqlite_utils.Database(memory=True)
    assert migrate(db) == [fn.__name__ for fn in MIGRATIONS]
    assert migrate(db) == []  # idempotent
    assert applied(db) == [fn.__name__ for fn in MIGRATIONS]
    expected = {
        "users": {"id", "name", "password_hash", "created"},
        "datasets": {"id", "owner", "name", "filename", "file_path", "rows_path", "columns", "row_count", "bytes",
                     "sha256", "label_column", "created", "kind", "parent"},
        "templates": {"id", "owner", "name", "spec", "created", "updated"},
        "jobs": {"id", "owner", "status", "config", "priority", "attempts", "max_attempts", "worker_id",
                 "heartbeat_at", "lease_expires_at", "cancel_requested", "created", "started", "finished",
                 "error_kind", "error_message", "result", "job_key", "kind"},
        "progress": {"id", "job", "attempt", "step", "total_steps", "phase", "loss", "loss_lm", "loss_ul", "loss_ln",
                     "lr", "examples_per_s", "elapsed_s", "eta_s", "message", "created"},
        "adapters": {"id", "job", "owner", "dir_path", "created"},
        "pool_marks": {"pool", "row_index", "owner", "label", "dataset", "created"},
    }
    for table, columns in expected.items():
        assert set(db[table].columns_dict) == columns, table
    # m003: a job's results are stored once, in jobs.result; nothing repeats them
    assert "evaluations" not in db.table_names()
    fks = {(fk.column, fk.other_table) for fk in db["jobs"].foreign_keys}
    assert fks == {("owner", "users")}


def test_m003_drops_the_result_copies_of_an_existing_database():
    db = sqlite_utils.Database(memory=True)
    m001 = MIGRATIONS[0]
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    m001(db)
    db.execute("INSERT INTO _migrations VALUES (?, 0)", [m001.__name__])
    db.execute("INSERT INTO users (name, password_hash, created) VALUES ('a', 'x', 0)")
    db.execute("INSERT INTO jobs (owner, config, created, status, result) VALUES (1, '{}', 0, 'succeeded', '{}')")
    db.execute("INSERT INTO adapters (job, owner, dir_path, params_base, created) VALUES (1, 1, 'adapters/1', 9, 0)")
    db.execute("INSERT INTO evaluations (job, method, metrics, created) VALUES (1, 't-few', '{}', 0)")
    assert migrate(db) == [fn.__name__ for fn in MIGRATIONS[1:]]
    assert "evaluations" not in db.table_names()
    assert db.execute("SELECT id, job, owner, dir_path FROM adapters").fetchall() == [(1, 1, 1, "adapters/1")]
    assert "params_base" not in db["adapters"].columns_dict
    assert db.execute("SELECT result FROM jobs").fetchone()[0] == "{}"  # the results themselves stay


def test_open_db_sets_wal_foreign_keys_and_busy_timeout(tmp_path, monkeypatch):
    monkeypatch.setenv("IA3APP_DATA_DIR", str(tmp_path / "d"))
    assert data_dir() == tmp_path / "d"
    db = open_db()
    assert (tmp_path / "d" / "ia3app.db").is_file()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
    with pytest.raises(Exception, match="FOREIGN KEY"):
        with transaction(db):
            db.execute("INSERT INTO datasets (owner, name, filename, file_path, rows_path, columns, row_count, bytes,"
                       " sha256, created) VALUES (999, 'x', 'x', 'x', 'x', '[]', 0, 0, '', 0)")
    assert db.execute("SELECT count(*) FROM datasets").fetchone()[0] == 0  # rolled back
    db.close()
    assert open_db(tmp_path / "d").execute("PRAGMA integrity_check").fetchone()[0] == "ok"  # reopen: no re-migration


def test_file_store_writes_atomically_and_refuses_paths_outside(tmp_path):
    store = FileStore(tmp_path)
    path = store.write_bytes("uploads/abc.orig", b"hello")
    assert path.read_bytes() == b"hello" and store.read_bytes("uploads/abc.orig") == b"hello"
    store.write_json("uploads/abc.rows.json", [{"a": "é"}])
    assert store.read_json("uploads/abc.rows.json") == [{"a": "é"}]
    for bad in ("../x", "/etc/passwd", "uploads/../../x", ""):
        with pytest.raises(UserError, match="refused path"):
            store.resolve(bad)
    (tmp_path / "uploads" / "link").symlink_to("/etc")
    with pytest.raises(UserError, match="refused path"):
        store.resolve("uploads/link/passwd")
    assert store.checkpoint_dir(7) == tmp_path / "checkpoints" / "7"
    with pytest.raises(ValueError):
        store.adapter_dir("../1")  # type: ignore[arg-type]
    assert sorted(os.listdir(tmp_path / "uploads")) == ["abc.orig", "abc.rows.json", "link"]  # no temp files


def test_disk_full_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    store = FileStore(tmp_path)
    store.write_bytes("uploads/a.orig", b"old")

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(StorageError, match="No space left on device; free some disk space"):
        store.write_bytes("uploads/a.orig", b"new")
    assert store.read_bytes("uploads/a.orig") == b"old"
    assert os.listdir(tmp_path / "uploads") == ["a.orig"]


def test_unwritable_data_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="could not write"):
        FileStore(blocker / "data")
    with pytest.raises(StorageError, match="could not open the database .*IA3APP_DATA_DIR"):
        open_db(blocker / "data")


def _dataset(db, store, owner, rows=None):
    rows = rows or [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]
    return repo.save_dataset(db, store, owner, "reviews", "../../evil name.csv", b"text,label\ngood,pos\nbad,neg\n",
                             ["text", "label"], rows, "label")


def test_datasets_are_stored_by_id_and_owner_scoped(tmp_path):
    db, store = open_db(tmp_path), FileStore(tmp_path)
    alice, bob = create_user(db, "alice", "password1"), create_user(db, "bob", "password2")
    ds_id = _dataset(db, store, alice)
    ds = repo.get_dataset(db, ds_id, alice)
    assert ds.columns == ["text", "label"] and ds.row_count == 2 and ds.label_column == "label"
    assert ds.filename == "../../evil name.csv" and "evil" not in ds.file_path and ds.file_path.startswith("uploads/")
    assert len(ds.sha256) == 64
    assert repo.load_rows(db, store, ds_id, alice)[0] == {"text": "good", "label": "pos"}
    assert repo.get_dataset(db, ds_id, bob) is None
    assert repo.list_datasets(db, bob) == [] and [d.id for d in repo.list_datasets(db, alice)] == [ds_id]
    with pytest.raises(UserError, match="not found") as exc_b:
        repo.load_rows(db, store, ds_id, bob)
    with pytest.raises(UserError, match="not found") as exc_missing:
        repo.require_dataset(db, 12345, bob)
    assert str(exc_b.value).replace(str(ds_id), "N") == str(exc_missing.value).replace("12345", "N")
    assert not repo.delete_dataset(db, store, ds_id, bob)
    assert repo.delete_dataset(db, store, ds_id, alice)
    assert sorted(os.listdir(tmp_path / "uploads")) == []


def test_failed_row_insert_leaves_no_files(tmp_path):
    db, store = open_db(tmp_path), FileStore(tmp_path)
    with pytest.raises(Exception, match="FOREIGN KEY"):
        _dataset(db, store, owner=999)  # no such user: the row fails after the files were written
    assert os.listdir(tmp_path / "uploads") == []
    assert db.execute("SELECT count(*) FROM datasets").fetchone()[0] == 0


def test_failed_file_write_leaves_no_row(tmp_path, monkeypatch):
    db, store = open_db(tmp_path), FileStore(tmp_path)
    alice = create_user(db, "alice", "password1")
    real_replace, calls = os.replace, []

    def second_write_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", second_write_fails)
    with pytest.raises(StorageError):
        _dataset(db, store, alice)
    assert os.listdir(tmp_path / "uploads") == []
    assert db.execute("SELECT count(*) FROM datasets").fetchone()[0] == 0


def test_label_column_must_exist(tmp_path):
    db, store = open_db(tmp_path), FileStore(tmp_path)
    alice = create_user(db, "alice", "password1")
    with pytest.raises(UserError, match="label column 'stars' is not one of the columns: text, label"):
        repo.save_dataset(db, store, alice, "x", "x.csv", b"", ["text", "label"], [], "stars")


def test_templates_upsert_by_name_and_are_owner_scoped(tmp_path):
    db = open_db(tmp_path)
    alice, bob = create_user(db, "alice", "password1"), create_user(db, "bob", "password2")
    t1 = repo.save_template(db, alice, "sentiment", {"input": "{{text}}", "choices": ["no", "yes"]})
    t2 = repo.save_template(db, alice, "sentiment", {"input": "Review: {{text}}", "choices": ["no", "yes"]})
    assert t1 == t2
    assert repo.get_template(db, t1, alice)["spec"]["input"] == "Review: {{text}}"
    assert repo.get_template(db, t1, bob) is None and repo.list_templates(db, bob) == []
    assert not repo.delete_template(db, t1, bob) and repo.delete_template(db, t1, alice)
    with pytest.raises(UserError, match="name"):
        repo.save_template(db, alice, "  ", {})


def test_storage_imports_neither_ia3app_nor_torch():
    import subprocess
    import sys

    code = ("import sys, storage.db, storage.files, storage.repo, storage.users, storage.api_keys, storage.migrations\n"
            "print(sorted(m for m in ('ia3app', 'torch', 'jobs', 'ui') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    from common.errors import UserError
    from ia3app.errors import UserError as SameError

    assert SameError is UserError  # one class: storage's errors are caught where ia3app's are


def test_admin_reports_and_cleans_folders_no_job_owns(tmp_path, capsys):
    """Issue 14: folders of unknown jobs (a replaced database) are reported, then cleaned; owned ones stay."""
    from jobs import queue as q
    from storage import admin
    from storage.users import create_user

    data = tmp_path / "data"
    db = open_db(data)
    store = FileStore(data)
    user = create_user(db, "alice", "password1")
    from ia3app.jobtypes import DataRef, JobRequest, JobSpec
    from ia3app.templates.spec import TemplateSpec

    spec = JobSpec(model="m", template=TemplateSpec(name="t", input="{{ x }}", choices=["a", "b"]))
    job_id = q.submit(db, user, JobRequest(spec, DataRef(1)))
    job = q.get_job(db, job_id, user)
    assert len(job.job_key) == 32
    assert store.bind_job_dirs(job_id, job.job_key) == []
    (data / "checkpoints" / "7" / "checkpoints").mkdir(parents=True)  # job 7 is not in the database
    (data / "checkpoints" / "7" / "checkpoints" / "checkpoint.pt").write_bytes(b"x" * 10)
    (data / "adapters" / str(job_id) / "adapter.safetensors").write_bytes(b"y")
    assert admin.main(["--data-dir", str(data), "list-stale"]) == 0
    out = capsys.readouterr()
    assert out.out == "checkpoints/7\t10 bytes\tno job #7 in the database\n"
    assert admin.main(["--data-dir", str(data), "clean-stale"]) == 0
    assert "removing checkpoints/7" in capsys.readouterr().out
    assert not (data / "checkpoints" / "7").exists() and (data / "adapters" / str(job_id) / "adapter.safetensors").exists()
    (data / "adapters" / str(job_id) / ".job-key").write_text("f" * 32)  # another job's key
    moved = store.bind_job_dirs(job_id, job.job_key)
    assert moved and moved[0].startswith(f"stale/adapters-{job_id}-{'f' * 32}")
    assert store.job_dir_key("adapters", job_id) == job.job_key
    assert admin.main(["--data-dir", str(data), "clean-stale"]) == 0
    assert "moved aside" in capsys.readouterr().out and not list((data / "stale").iterdir())
