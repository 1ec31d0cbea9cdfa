"""The newcomer's journey, second pass (issue 23), in a real browser (Playwright + Debian Chromium).

Each test is something a new user hit: the header after signing in, the loss chart of a job started from
Train, Run again refilling every page, delete confirmations, the layout at 1280×800, the words, the
estimate beside Start. Screenshots go to tests/artifacts/23-*.png.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("IA3APP_SHOTS") or Path(__file__).resolve().parent / "artifacts")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
VIEW = {"width": 1280, "height": 800}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"23-{name}.png"))


def _need_browser():
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent: install Debian's chromium (make chromium) to run browser tests")
    pytest.importorskip("playwright")


@pytest.fixture(scope="module")
def browser():
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def signed_in_app(tmp_path_factory):
    """The app with sign-in required and two users (no worker: nothing here trains)."""
    _need_browser()
    from storage import users
    from ui.auth import make_auth_check
    from ui.context import AppContext
    from ui.main import launch

    ctx = AppContext(tmp_path_factory.mktemp("signin-data"))
    users.create_user(ctx.db(), "alice", "alice-password-1")
    users.create_user(ctx.db(), "bob", "bob-password-22")
    ctx.auth_required = True
    demo, url = launch(ctx, port=free_port(), auth=make_auth_check(ctx.db), prevent_thread_lock=True, quiet=True)
    yield url
    demo.close()


def sign_in(page, url: str, name: str, password: str) -> None:
    page.goto(url)
    page.get_by_label("username").fill(name)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name=re.compile("login", re.I)).click()


def test_header_names_who_signed_in_and_signs_out(signed_in_app, browser):
    url = signed_in_app
    pages = {}
    for name, password in (("alice", "alice-password-1"), ("bob", "bob-password-22")):
        page = browser.new_context(viewport=VIEW).new_page()
        sign_in(page, url, name, password)
        page.get_by_text(f"Signed in as {name}").wait_for(timeout=60_000)
        assert page.get_by_text("Not signed in").count() == 0
        pages[name] = page
    shot(pages["alice"], "1-signed-in-alice")
    shot(pages["bob"], "1-signed-in-bob")
    out = pages["alice"].locator("#ia3-sign-out")
    out.wait_for(timeout=30_000)
    out.click()
    pages["alice"].get_by_label("password").wait_for(timeout=30_000)  # back at the sign-in form
    shot(pages["alice"], "1-signed-out")
    pages["bob"].reload()
    pages["bob"].get_by_text("Signed in as bob").wait_for(timeout=60_000)  # the other user is still in
