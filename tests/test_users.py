"""storage.users: argon2 hashes, verification, rehash, the local user, the CLI."""

import subprocess
import sys
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from ia3app.errors import UserError
from storage import users
from storage.db import open_db

ROOT = Path(__file__).resolve().parent.parent


def test_create_and_verify(tmp_path):
    db = open_db(tmp_path)
    uid = users.create_user(db, "alice", "correct horse")
    stored = db.execute("SELECT password_hash FROM users WHERE id = ?", [uid]).fetchone()[0]
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert users.verify_user(db, "alice", "correct horse") == uid
    assert users.verify_user(db, "alice", "wrong horse!") is None
    assert users.verify_user(db, "nobody", "correct horse") is None
    with pytest.raises(UserError, match="already exists"):
        users.create_user(db, "alice", "another one")
    with pytest.raises(UserError, match="at least 8"):
        users.create_user(db, "bob", "short")
    with pytest.raises(UserError, match="not allowed"):
        users.create_user(db, "bob smith", "long enough")
    users.set_password(db, "alice", "new password")
    assert users.verify_user(db, "alice", "correct horse") is None
    assert users.verify_user(db, "alice", "new password") == uid


def test_outdated_hash_is_upgraded_on_login(tmp_path):
    db = open_db(tmp_path)
    uid = users.create_user(db, "alice", "correct horse")
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("correct horse")
    db.execute("UPDATE users SET password_hash = ? WHERE id = ?", [weak, uid])
    assert users.verify_user(db, "alice", "correct horse") == uid
    upgraded = db.execute("SELECT password_hash FROM users WHERE id = ?", [uid]).fetchone()[0]
    assert upgraded != weak and not PasswordHasher().check_needs_rehash(upgraded)


def test_local_user_exists_once_and_cannot_log_in(tmp_path):
    db = open_db(tmp_path)
    local = users.ensure_local_user(db)
    assert users.ensure_local_user(db) == local
    assert users.verify_user(db, "local", "") is None and users.verify_user(db, "local", "!") is None
    assert users.count_login_users(db) == 0
    with pytest.raises(UserError, match="reserved"):
        users.create_user(db, "local", "long enough")


def test_cli_add_and_list(tmp_path):
    def cli(*args, stdin=""):
        return subprocess.run([sys.executable, "-m", "storage.users", "--data-dir", str(tmp_path), *args],
                              input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60)

    added = cli("add", "carol", "--password-stdin", stdin="s3cret-password\n")
    assert added.returncode == 0, added.stderr
    listed = cli("list")
    assert "carol" in listed.stdout
    again = cli("add", "carol", "--password-stdin", stdin="s3cret-password\n")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    assert users.verify_user(open_db(tmp_path), "carol", "s3cret-password") is not None
