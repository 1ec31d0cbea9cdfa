"""Issue 14 item 7 on a launched app: share stays off whatever GRADIO_SHARE says, failed sign-ins are
limited per user name and per address; the data directory and database are created owner-only."""

from __future__ import annotations

import socket
import stat

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_failed_sign_ins_are_limited_per_user_and_per_address(tmp_path, monkeypatch):
    from storage import users
    from ui.auth import make_auth_check
    from ui.context import AppContext
    from ui.main import launch

    monkeypatch.setenv("GRADIO_SHARE", "true")
    ctx = AppContext(tmp_path / "data", auth_required=True)
    users.create_user(ctx.db(), "alice", "alice-pass-1")
    users.create_user(ctx.db(), "bob", "bob-pass-22")
    demo, url = launch(ctx, port=free_port(), auth=make_auth_check(ctx.db), prevent_thread_lock=True, quiet=True)
    try:
        assert demo.share is False and demo.share_url is None

        def login(name, password):
            return httpx.post(f"{url}login", data={"username": name, "password": password}, timeout=30)

        assert login("alice", "alice-pass-1").status_code == 200
        for _ in range(5):
            assert login("alice", "wrong").status_code == 400
        assert login("alice", "alice-pass-1").status_code == 400  # the name is locked for a while
        assert login("bob", "bob-pass-22").status_code == 200  # another name is not
        for _ in range(14):
            login("mallory", "guess")
        refused = login("bob", "bob-pass-22")  # 20 failures from this address: refused before checking
        assert refused.status_code == 429 and "too many failed sign-ins from your address" in refused.text
    finally:
        demo.close()


def test_data_dir_and_database_are_owner_only(tmp_path):
    from storage.db import open_db
    from storage.files import FileStore

    data = tmp_path / "fresh"
    db = open_db(data)
    db.execute("CREATE TABLE t (x)")
    FileStore(data).write_bytes("uploads/a.csv", b"x")
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("ia3app.db", "ia3app.db-wal"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    for sub in ("uploads", "checkpoints", "adapters"):
        assert stat.S_IMODE((data / sub).stat().st_mode) == 0o700, sub


def test_download_folders_are_owner_only_and_swept(tmp_path):
    import os
    import time

    from ui import tempfiles

    path = tempfiles.new_download("ia3app-zip-", "a.zip")
    path.write_bytes(b"zip")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert tempfiles.sweep() == 0 and path.exists()  # fresh: still being served
    old = time.time() - tempfiles.MAX_AGE_S - 1
    os.utime(path.parent, (old, old))
    tempfiles.new_download("ia3app-pred-", "p.csv")
    assert not path.parent.exists()


def test_local_model_folders_only_inside_the_allowed_ones(tmp_path):
    from ia3app.errors import UserError
    from ui import model_picker as M
    from ui.context import AppContext

    allowed = tmp_path / "models"
    (allowed / "m").mkdir(parents=True)
    (allowed / "m" / "config.json").write_text("{}")
    single = AppContext(tmp_path / "d1")
    assert single.allowed_model_dirs() is None  # the local user may use any folder
    multi = AppContext(tmp_path / "d2", auth_required=True)
    assert multi.allowed_model_dirs() == []
    with pytest.raises(UserError, match="administrator allowed no folders"):
        M.resolve_model(M.LOCAL, "/etc", multi.data_dir, multi.allowed_model_dirs())
    flagged = AppContext(tmp_path / "d3", auth_required=True, model_dirs=[allowed])
    assert M.resolve_model(M.LOCAL, str(allowed / "m"), flagged.data_dir, flagged.allowed_model_dirs()) == str(
        (allowed / "m").resolve())
    for probe in ("/usr", str(allowed / ".." / "secret")):  # same words whether or not it exists
        with pytest.raises(UserError, match=r"must be inside a folder the administrator allowed \(--model-dir\)"):
            M.resolve_model(M.LOCAL, probe, flagged.data_dir, flagged.allowed_model_dirs())


def test_start_check_refuses_a_folder_outside_the_allowed_ones_without_looking_at_it(tmp_path):
    from ui import model_picker as M

    reason = M.unusable_reason(M.LOCAL, "/etc", [tmp_path])
    assert reason.startswith("model folders must be inside a folder the administrator allowed")
    assert M.unusable_reason(M.LOCAL, "/nonexistent", [tmp_path]) == reason  # same words: reveals nothing
