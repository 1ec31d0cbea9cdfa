"""Users and passwords (argon2id via argon2-cffi), and the ``python -m storage.users`` CLI.

    python -m storage.users add NAME            # asks for the password twice
    echo "$PW" | python -m storage.users add NAME --password-stdin
    python -m storage.users list
    python -m storage.users passwd NAME
    python -m storage.users key create NAME [--name LABEL]   # prints a new API key once
    python -m storage.users key list [NAME]
    python -m storage.users key revoke PREFIX

Single-user mode (the app on 127.0.0.1) runs as the user ``local``, whose password hash is
unusable: nobody can log in as ``local`` over the network.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
import time

import sqlite_utils
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from common.errors import UserError
from storage.db import open_db, transaction

LOCAL_USER = "local"
MIN_PASSWORD_LENGTH = 8
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_UNUSABLE_HASH = "!"  # never a valid argon2 hash: verification always fails
_hasher = PasswordHasher()
# Verified against when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def create_user(db: sqlite_utils.Database, name: str, password: str) -> int:
    """Add a user; returns the id. UserError for a bad or taken name or a short password."""
    _check_name(name)
    _check_password(password)
    with transaction(db):
        if db.execute("SELECT 1 FROM users WHERE name = ?", [name]).fetchone():
            raise UserError(f"a user named {name!r} already exists; pick another name or use 'passwd'")
        cursor = db.execute(
            "INSERT INTO users (name, password_hash, created) VALUES (?, ?, ?)", [name, _hasher.hash(password), time.time()]
        )
        return int(cursor.lastrowid)


def set_password(db: sqlite_utils.Database, name: str, password: str) -> None:
    _check_password(password)
    with transaction(db):
        if db.execute("UPDATE users SET password_hash = ? WHERE name = ?", [_hasher.hash(password), name]).rowcount == 0:
            raise UserError(f"no user named {name!r}; add it with: python -m storage.users add {name}")


def verify_user(db: sqlite_utils.Database, name: str, password: str) -> int | None:
    """The user's id when ``password`` is right, else None. Rehashes when argon2's parameters changed."""
    row = db.execute("SELECT id, password_hash FROM users WHERE name = ?", [name]).fetchone()
    user_id, stored = (row[0], row[1]) if row else (None, _DUMMY_HASH)
    try:
        _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if user_id is None:
        return None
    if _hasher.check_needs_rehash(stored):
        with transaction(db):
            db.execute("UPDATE users SET password_hash = ? WHERE id = ?", [_hasher.hash(password), user_id])
    return int(user_id)


def user_id(db: sqlite_utils.Database, name: str) -> int | None:
    row = db.execute("SELECT id FROM users WHERE name = ?", [name]).fetchone()
    return int(row[0]) if row else None


def ensure_local_user(db: sqlite_utils.Database) -> int:
    """The id of the single-user mode's ``local`` user, created on first use (no usable password)."""
    with transaction(db):
        db.execute(
            "INSERT OR IGNORE INTO users (name, password_hash, created) VALUES (?, ?, ?)",
            [LOCAL_USER, _UNUSABLE_HASH, time.time()],
        )
        return int(db.execute("SELECT id FROM users WHERE name = ?", [LOCAL_USER]).fetchone()[0])


def list_users(db: sqlite_utils.Database) -> list[dict]:
    cursor = db.execute("SELECT id, name, created FROM users ORDER BY id")
    return [{"id": r[0], "name": r[1], "created": r[2]} for r in cursor.fetchall()]


def count_login_users(db: sqlite_utils.Database) -> int:
    """Users who can log in (everyone but ``local``) — the app refuses to listen publicly without one."""
    return int(db.execute("SELECT count(*) FROM users WHERE password_hash != ?", [_UNUSABLE_HASH]).fetchone()[0])


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name or ""):
        raise UserError(f"user name {name!r} is not allowed: use 1-64 letters, digits, '_', '.', '@' or '-'")
    if name == LOCAL_USER:
        raise UserError(f"{LOCAL_USER!r} is reserved for single-user mode; pick another name")


def _check_password(password: str) -> None:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise UserError("the two passwords differ; nothing was changed")
    return first


def _key_command(db: sqlite_utils.Database, args: argparse.Namespace) -> None:
    from storage import api_keys

    if args.key_command == "create":
        prefix, key = api_keys.create_key(db, args.name, args.label)
        print(key)
        print(f"API key {prefix!r} created for {args.name!r}; it is shown only now. "
              f"Revoke it with: python -m storage.users key revoke {prefix}", file=sys.stderr)
    elif args.key_command == "list":
        for k in api_keys.list_keys(db, args.name):
            when = lambda t: time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) if t else "-"  # noqa: E731
            state = f"revoked {when(k['revoked'])}" if k["revoked"] else "active"
            print(f"{k['prefix']}\t{k['user']}\t{k['name']}\tcreated {when(k['created'])}\t"
                  f"last used {when(k['last_used'])}\t{state}")
    else:
        api_keys.revoke_key(db, args.prefix)
        print(f"key {args.prefix!r} revoked")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m storage.users", description="Manage ia3app users.")
    parser.add_argument("--data-dir", help="data directory (default: $IA3APP_DATA_DIR or ./data)")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("add", "passwd"):
        p = sub.add_parser(command, help=f"{command} a user (password asked twice, or read from stdin)")
        p.add_argument("name")
        p.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
    sub.add_parser("list", help="list users")
    key = sub.add_parser("key", help="API keys for the JSON prediction API").add_subparsers(dest="key_command",
                                                                                             required=True)
    p = key.add_parser("create", help="create a key for a user (printed once; only its hash is stored)")
    p.add_argument("name", help="the user")
    p.add_argument("--name", dest="label", default="default", help="what the key is for (shown in listings)")
    p = key.add_parser("list", help="list keys (prefixes, never the keys)")
    p.add_argument("name", nargs="?", help="only this user's keys")
    p = key.add_parser("revoke", help="revoke a key by its prefix (or the whole key)")
    p.add_argument("prefix")
    args = parser.parse_args(argv)
    db = open_db(args.data_dir)
    try:
        if args.command == "key":
            _key_command(db, args)
        elif args.command == "list":
            for user in list_users(db):
                print(f"{user['id']}\t{user['name']}\t{time.strftime('%Y-%m-%d %H:%M', time.gmtime(user['created']))}")
        elif args.command == "add":
            _check_name(args.name)
            new_id = create_user(db, args.name, _read_password(args))
            print(f"added user {args.name!r} (id {new_id})")
        else:
            set_password(db, args.name, _read_password(args))
            print(f"password of {args.name!r} changed")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
