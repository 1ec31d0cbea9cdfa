"""API keys for the JSON prediction API: created and revoked with ``python -m storage.users key ...``.

A key reads ``ia3_<prefix>_<secret>``: the prefix (public, shown in listings) finds the row, the
whole key is checked against its stored SHA-256 in constant time. Keys carry 190+ bits of
randomness, so a fast hash is enough (a password needs argon2; a random key does not), and
verifying one costs microseconds per request. The key itself is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import sqlite_utils

from common.errors import UserError
from storage.db import transaction

KEY_PREFIX = "ia3_"
LAST_USED_EVERY_S = 60.0
"""last_used is refreshed at most this often (a key in use would otherwise write on every request)."""


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _owner(db: sqlite_utils.Database, user: str) -> int:
    row = db.execute("SELECT id FROM users WHERE name = ?", [user]).fetchone()
    if row is None:
        raise UserError(f"no user named {user!r}; add it with: python -m storage.users add {user}")
    return int(row[0])


def create_key(db: sqlite_utils.Database, user: str, name: str = "default") -> tuple[str, str]:
    """(prefix, key) of a new key for `user`; the key is not stored and cannot be shown again."""
    owner = _owner(db, user)
    if not name or len(name) > 64:
        raise UserError("the key's name must have 1-64 characters")
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(24)}"
    with transaction(db):
        db.execute(
            "INSERT INTO api_keys (owner, name, prefix, key_hash, created) VALUES (?, ?, ?, ?, ?)",
            [owner, name, prefix, _hash(key), time.time()],
        )
    return prefix, key


def list_keys(db: sqlite_utils.Database, user: str | None = None) -> list[dict]:
    """Keys (never their secrets) of one user, or of everyone."""
    sql = ("SELECT k.prefix, u.name, k.name, k.created, k.last_used, k.revoked FROM api_keys k "
           "JOIN users u ON u.id = k.owner")
    args: list = []
    if user is not None:
        sql += " WHERE k.owner = ?"
        args.append(_owner(db, user))
    cols = ("prefix", "user", "name", "created", "last_used", "revoked")
    return [dict(zip(cols, row)) for row in db.execute(sql + " ORDER BY k.id", args).fetchall()]


def revoke_key(db: sqlite_utils.Database, prefix: str) -> None:
    """Revoke a key by its prefix (the part after ia3_ that listings show); its requests stop at once."""
    prefix = prefix.removeprefix(KEY_PREFIX).split("_")[0]
    with transaction(db):
        done = db.execute("UPDATE api_keys SET revoked = ? WHERE prefix = ? AND revoked IS NULL",
                          [time.time(), prefix]).rowcount
    if not done:
        raise UserError(f"no active key with prefix {prefix!r}; see python -m storage.users key list")


def verify_key(db: sqlite_utils.Database, key: str | None) -> int | None:
    """The owner's user id for a valid, unrevoked key; None otherwise (the same for every failure)."""
    if not key or not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    prefix = key[len(KEY_PREFIX):].split("_")[0]
    row = db.execute("SELECT id, owner, key_hash, revoked, last_used FROM api_keys WHERE prefix = ?",
                     [prefix]).fetchone()
    if row is None or row[3] is not None or not hmac.compare_digest(row[2], _hash(key)):
        return None
    now = time.time()
    if row[4] is None or now - row[4] > LAST_USED_EVERY_S:  # not a write per request
        with transaction(db):
            db.execute("UPDATE api_keys SET last_used = ? WHERE id = ?", [now, row[0]])
    return int(row[1])
