"""Calling the web app's handlers directly, as the tests of each page do: an app context on a temporary
data directory with two users (fixtures ``ctx`` and ``users``: import them into a test module), a stand-in
for gr.Request, files to upload."""

from __future__ import annotations

import pytest

from ui.context import AppContext

SST2_HEAD = "sentence,label\n" + "".join(
    f"{'a fine film' if i % 2 else 'a dull mess'} number {i},{'positive' if i % 2 else 'negative'}\n" for i in range(12)
)


class Req:
    """What the handlers read from gr.Request: the signed-in name and the query string."""

    def __init__(self, username=None):
        self.username = username
        self.query_params = {}


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    monkeypatch.setenv("IA3APP_DATA_DIR", str(tmp_path / "data"))
    return AppContext(tmp_path / "data", max_upload_bytes=20_000, max_rows=50)


@pytest.fixture
def users(ctx):
    from storage import users

    return users.create_user(ctx.db(), "alice", "correct horse 1"), users.create_user(ctx.db(), "bob", "battery 22")


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)
