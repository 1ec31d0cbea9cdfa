"""Issue 14 item 5: storage faults are named — a damaged database stops the app and the worker at
start with the recovery steps; connections notice a replaced or deleted database file; the worker logs a
fault once, not once per poll."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time

import pytest

from ia3app.errors import UserError
from storage import users
from storage.db import open_db
from storage.files import StorageError
from timing import scaled, wait_for


def damage(data_dir):
    db = open_db(data_dir)
    users.create_user(db, "alice", "password1")
    db.conn.close()
    for suffix in ("-wal", "-shm"):
        (data_dir / f"ia3app.db{suffix}").unlink(missing_ok=True)
    (data_dir / "ia3app.db").write_bytes(b"this is not a database, it was overwritten" * 100)


def test_app_and_worker_refuse_to_start_on_a_damaged_database(tmp_path, capsys):
    from jobs import worker
    from ui import main

    data = tmp_path / "data"
    damage(data)
    start = time.monotonic()
    with pytest.raises(SystemExit) as info:
        main.main(["--data-dir", str(data), "--no-worker"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"the database {data / 'ia3app.db'} is damaged" in err
    assert "To recover: 1) stop the app and every worker" in err and ".recover" in err
    assert worker.main(["--data-dir", str(data), "--once"]) == 2
    assert "is damaged" in capsys.readouterr().err
    assert time.monotonic() - start < scaled(10)  # refused at once, no waiting on the damaged file


def test_app_connections_refuse_a_replaced_or_deleted_database(tmp_path):
    from ui.context import AppContext

    ctx = AppContext(tmp_path / "data")
    users.create_user(ctx.db(), "alice", "password1")
    other = open_db(tmp_path / "restored")  # e.g. a backup restored while the app runs
    users.create_user(other, "bob", "password2")
    other.conn.close()
    os.replace(tmp_path / "restored" / "ia3app.db", ctx.db_path)
    with pytest.raises(StorageError, match=r"was replaced while the app was running .* remove .*-wal"):
        ctx.db()
    shutil.rmtree(ctx.data_dir)
    with pytest.raises(StorageError, match=r"is gone: the data directory .* was deleted or moved"):
        ctx.db()
    assert not ctx.db_path.exists()  # not silently recreated
    assert isinstance(StorageError("x"), UserError)  # so every page shows the words


def test_worker_logs_a_vanished_database_once_and_goes_on_when_it_is_back(tmp_path, caplog):
    from jobs.worker import Worker, WorkerConfig

    data = tmp_path / "data"
    worker = Worker(WorkerConfig(data_dir=data, poll_s=0.05))
    backup = tmp_path / "backup"
    shutil.copytree(data, backup)
    shutil.rmtree(data)
    caplog.set_level(logging.INFO, logger="jobs.worker")
    thread = threading.Thread(target=worker.serve)
    thread.start()
    try:
        wait_for(lambda: any("is gone" in r.getMessage() for r in caplog.records), "the worker names the missing data")
        time.sleep(1)  # a window in which a repeated message would show (not synchronisation)
        gone = [r for r in caplog.records if "is gone" in r.getMessage()]
        assert len(gone) == 1, [r.getMessage() for r in caplog.records]
        assert not data.exists()  # the worker did not recreate it
        shutil.copytree(backup, data)  # a restored copy is another file: named once too
        wait_for(lambda: any("was replaced" in r.getMessage() for r in caplog.records), "the worker names the new copy")
        time.sleep(1)  # a window in which a repeated message would show (not synchronisation)
        replaced = [r for r in caplog.records if "was replaced" in r.getMessage()]
        assert len(replaced) == 1
    finally:
        worker.shutdown.set()
        thread.join(10)


def test_page_events_turn_storage_faults_into_messages(tmp_path):
    import errno
    import sqlite3

    import gradio as gr

    from ui.faults import name_storage_faults

    def corrupt():
        raise sqlite3.DatabaseError("database disk image is malformed")

    def full():
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "uploads" / "x.csv"))

    def fine(x):
        return x

    def refresh():  # "Refresh list" after the database went away: a StorageError, an empty "Error" toast before
        from storage.db import vanished_database

        raise vanished_database(tmp_path)

    def ticking():  # a generator handler (progress updates) failing after its first update
        yield "first"
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "x"))

    with gr.Blocks() as demo:
        box = gr.Textbox()
        for fn in (corrupt, full, fine, refresh, ticking):
            box.submit(fn, [] if fn is not fine else [box], [box])
    assert name_storage_faults(demo, tmp_path) == 5
    fns = [f.fn for f in demo.fns.values()]
    with pytest.raises(gr.Error, match=r"is damaged \(database disk image is malformed\)\. To recover"):
        fns[0]()
    with pytest.raises(gr.Error, match="No space left on device; free some disk space"):
        fns[1]()
    assert fns[2]("x") == "x"
    with pytest.raises(gr.Error, match="is gone: the data directory .* was deleted or moved"):
        fns[3]()
    updates = fns[4]()
    assert next(updates) == "first"
    with pytest.raises(gr.Error, match="Read-only file system"):
        next(updates)
