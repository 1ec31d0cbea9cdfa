"""Issue 14 item 7 and issue 22 item 3 on a launched app: share stays off whatever GRADIO_SHARE says,
failed sign-ins are limited per (user name, address) and per address on every login route, in bounded
memory, with the wait in words; forwarded headers count only from a named proxy; the data directory and
database are created owner-only."""

from __future__ import annotations

import re
import stat

import httpx
import pytest

from apps import USERS, launched


@pytest.fixture
def site(monkeypatch, request):
    """(demo, url) of conftest's proxied_site (sign-in, alice and bob, behind a named proxy on 127.0.0.1), launched
    while GRADIO_SHARE asks for a public link."""
    monkeypatch.setenv("GRADIO_SHARE", "true")
    _, demo, url = request.getfixturevalue("proxied_site")
    return demo, url


def login(url, name, password, address="10.0.0.66", path="login"):
    return httpx.post(f"{url}{path}", data={"username": name, "password": password},
                      headers={"X-Forwarded-For": address}, timeout=60)


@pytest.mark.slow
def test_failed_sign_ins_are_limited_per_name_and_address_never_for_everyone(site):
    """Issue 22 item 3: five wrong tries on alice's name (and its trailing-space variant, and on /login/,
    which was never counted) from the attacker's address refuse the attacker, with the wait in words;
    alice signs in from her own address all along; 20 failures from one address refuse that address."""
    demo, url = site
    assert demo.share is False and demo.share_url is None
    assert login(url, "alice", USERS["alice"], "10.0.0.7").status_code == 200
    assert login(url, "alice", "wrong", path="login/").status_code == 400  # the trailing-slash route counts
    for name in ("alice", "alice ", "alice", " alice"):
        assert login(url, name, "wrong").status_code == 400
    refused = login(url, "alice", USERS["alice"])  # the right password, from the attacker's address
    assert refused.status_code == 429
    assert re.fullmatch(r"too many attempts, try again in \d+ s", refused.json()["detail"])
    assert int(refused.headers["retry-after"]) > 0
    assert login(url, "alice", USERS["alice"], "10.0.0.7").status_code == 200  # the victim is not locked out
    assert login(url, "bob", USERS["bob"]).status_code == 200  # another name from the same address
    for i in range(15):
        login(url, f"mallory{i}", "guess")
    refused = login(url, "bob", USERS["bob"])  # 20 failures from this address: refused before checking
    assert refused.status_code == 429 and "too many attempts, try again in" in refused.text
    assert login(url, "bob", USERS["bob"], "10.0.0.8").status_code == 200


@pytest.mark.slow
def test_forwarded_headers_are_ignored_unless_the_proxy_is_named(tmp_path, monkeypatch):
    """By default uvicorn believed X-Forwarded-For from 127.0.0.1: anything on the machine could pose as
    any address (and dodge the per-address limit). Without --trusted-proxy the header is ignored."""
    from ui.context import AppContext

    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "127.0.0.1")
    with launched(AppContext(tmp_path / "data", auth_required=True), users=USERS) as (_, url, _):
        for i in range(5):
            assert login(url, "alice", "wrong", f"10.1.0.{i}").status_code == 400  # posing as 5 addresses
        assert login(url, "alice", USERS["alice"], "10.9.9.9").status_code == 429  # all were 127.0.0.1


def test_the_limiter_keeps_bounded_memory_whatever_the_names():
    """300 failed sign-ins with 0.5-1 MB unique names grew the app by 264 MB: now a key is a 16-byte digest
    and at most max_keys are kept (the least recently failed leave first)."""
    import tracemalloc

    from ui.auth import AttemptLimiter

    limiter = AttemptLimiter(max_keys=1_000)
    tracemalloc.start()
    try:
        for i in range(3_000):
            name = f"{i:06d}" + "x" * 20_000
            limiter.failed(f"name:10.0.0.66:{name}")
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(limiter) == 1_000
    assert held < 1_000_000, f"{held:,} bytes"
    for _ in range(4):
        limiter.failed("name:10.0.0.66:alice")
    assert limiter.retry_after("name:10.0.0.66:alice") == 0  # 4 < 5
    limiter.failed("name:10.0.0.66:alice")
    assert limiter.retry_after("name:10.0.0.66:alice") > 0
    assert limiter.retry_after("name:10.0.0.7:alice") == 0


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
