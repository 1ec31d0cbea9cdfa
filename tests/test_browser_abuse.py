"""Issue 22's page-level messages in a real browser (Playwright + Debian Chromium): a sign-in refused for
too many attempts says so and how long to wait (Gradio's form showed nothing for a 429), while the same
user signs in from another address; 'Refresh list' after the database went away says what happened
(it was an empty 'Error' toast). Screenshots go to tests/artifacts/22-*.png (or $IA3APP_SHOTS)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from apps import USERS, VIEW
from test_browser_journey import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(os.environ.get("IA3APP_SHOTS") or Path(__file__).resolve().parent / "artifacts")


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"22-{name}.png"))


def test_too_many_attempts_are_told_in_words_and_never_lock_out_the_user(proxied_site, browser):
    _, _, url = proxied_site
    attacker = browser.new_context(viewport=VIEW, extra_http_headers={"X-Forwarded-For": "10.6.6.6"}).new_page()
    for _ in range(5):
        sign_in(attacker, url, "alice", "wrong guess")
        attacker.get_by_text(re.compile("incorrect credentials", re.I)).wait_for(timeout=60_000)
    sign_in(attacker, url, "alice", USERS["alice"])  # even the right password, from this address
    notice = attacker.locator("#ia3-login-notice")
    notice.wait_for(timeout=60_000)
    assert re.fullmatch(r"too many attempts, try again in \d+ s", notice.inner_text().strip())
    shot(attacker, "1-too-many-attempts")
    alice = browser.new_context(viewport=VIEW, extra_http_headers={"X-Forwarded-For": "10.0.0.7"}).new_page()
    sign_in(alice, url, "alice", USERS["alice"])
    alice.get_by_text("Signed in as alice").wait_for(timeout=60_000)
    shot(alice, "2-alice-signs-in-meanwhile")


def test_refresh_list_after_the_database_went_away_says_so(proxied_site, browser):
    ctx, _, url = proxied_site
    page = browser.new_context(viewport=VIEW, extra_http_headers={"X-Forwarded-For": "10.0.0.7"}).new_page()
    sign_in(page, url, "alice", USERS["alice"])
    page.get_by_text("Signed in as alice").wait_for(timeout=60_000)
    page.get_by_role("tab", name=re.compile("Progress & jobs")).click()
    refresh = page.get_by_role("button", name=re.compile("Refresh list"))
    refresh.wait_for(timeout=30_000)
    moved = ctx.data_dir.with_name("moved-away")
    ctx.data_dir.rename(moved)  # the data directory deleted or moved under the running app
    try:
        refresh.click()
        page.get_by_text(re.compile("is gone: the data directory .* was deleted or moved")).first.wait_for(
            timeout=60_000)
        shot(page, "3-refresh-after-storage-fault")
    finally:
        moved.rename(ctx.data_dir)
