"""Launched apps, Chromium, and Gradio's queue as the browser uses it: the pieces the tests that talk to a
running app share (conftest.py turns the usual ones into fixtures: ``app``, ``signed_in_site``,
``proxied_site``, ``browser``).

- ``launched(ctx, worker=..., users=...)``: the app on a free port (sign-in on when ``ctx.auth_required``),
  closed afterwards; optionally with one local worker and user accounts. ``served(asgi_app)``: an ASGI app
  (the predictions-only API) under uvicorn on a free port.
- ``need_browser()`` / ``chromium()``: Debian's Chromium through Playwright, with the suite's launch flags.
- ``upload(url, name, raw)`` / ``call_event(url, fn_index, data, ...)``: a file upload and one event through
  the queue (``/gradio_api/queue/join`` + its event stream), as a browser tab sends them.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]
VIEW = {"width": 1280, "height": 800}
USERS = {"alice": "alice-pass-1", "bob": "bob-pass-22"}
"""The accounts a signed-in site has: name -> password."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def launched(ctx, *, worker: bool = False, users: dict[str, str] | None = None) -> Iterator[tuple[Any, str, dict]]:
    """(demo, url, {user name: user id}) of the app launched on `ctx` (sign-in on when ctx.auth_required), with
    the `users` accounts created first and, with `worker`, one local worker on ctx's data directory (and
    $IA3APP_DATA_DIR naming it, as ``app.py`` sets it); all stopped and restored afterwards."""
    from storage import users as accounts
    from ui.auth import make_auth_check
    from ui.main import launch

    ids = {name: accounts.create_user(ctx.db(), name, password) for name, password in (users or {}).items()}
    before = os.environ.get("IA3APP_DATA_DIR")
    running = None
    if worker:
        from jobs.local import start_local_worker

        os.environ["IA3APP_DATA_DIR"] = str(ctx.data_dir)
        running = start_local_worker(ctx.data_dir, poll_s=0.3)
    demo, url = launch(ctx, port=free_port(), auth=make_auth_check(ctx.db) if ctx.auth_required else None,
                       prevent_thread_lock=True, quiet=True)
    try:
        yield demo, url, ids
    finally:
        demo.close()
        if running is not None:
            running.stop()
            if before is None:
                os.environ.pop("IA3APP_DATA_DIR", None)
            else:
                os.environ["IA3APP_DATA_DIR"] = before


@contextmanager
def served(asgi_app) -> Iterator[str]:
    """The base URL of `asgi_app` served by uvicorn (one event loop, in a thread) on a free port; stopped after."""
    import threading

    import uvicorn

    from timing import wait_for

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(asgi_app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, "the server has started")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def need_browser() -> None:
    """Skip the test unless Debian's Chromium and Playwright are installed."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent: install Debian's chromium (make chromium) to run browser tests")
    pytest.importorskip("playwright")


@contextmanager
def chromium() -> Iterator[Any]:
    """A Playwright Chromium browser with the suite's launch flags."""
    need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def fn_index(demo, name: str) -> int:
    """The index of the first event whose handler is the function called `name`."""
    return next(i for i, f in demo.fns.items() if getattr(f.fn, "__name__", "") == name)


def event_inputs(demo, index: int, values: dict[str, Any]) -> list:
    """The data list event `index` takes, as a browser sends it: each input component's current value in a
    fresh page (its default), except those named in `values` by the start of their label."""
    data = []
    for component in demo.fns[index].inputs:
        label = getattr(component, "label", None) or ""
        given = [v for start, v in values.items() if label.startswith(start)]
        data.append(given[0] if given else getattr(component, "value", None))
    return data


def upload(url: str, name: str, raw: bytes) -> dict:
    """Upload `raw` as the file `name`: the FileData a file box then sends."""
    import httpx

    with httpx.Client(base_url=url, timeout=60) as http:
        r = http.post("/gradio_api/upload", files={"files": (name, raw, "text/csv")})
        r.raise_for_status()
        path = r.json()[0]
    return {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def call_event(url: str, index: int, data: list, session: str | None = None,
               seen: Callable[[str], None] = lambda msg: None) -> list:
    """One event through the queue, as the browser sends it; its output data. `seen(msg)` is called with each
    message of the event's stream as it arrives ("estimation", "process_starts", "process_completed"...).
    A failed event raises AssertionError with the queue's message."""
    import httpx

    session = session or uuid.uuid4().hex
    with httpx.Client(base_url=url, timeout=120) as http:
        r = http.post("/gradio_api/queue/join", json={"data": data, "fn_index": index, "session_hash": session,
                                                      "event_data": None, "trigger_id": None})
        r.raise_for_status()
        with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                seen(msg.get("msg", ""))
                if msg.get("msg") == "process_completed":
                    assert msg.get("success"), msg
                    return msg["output"]["data"]
    raise AssertionError("the event's stream ended without a result")
