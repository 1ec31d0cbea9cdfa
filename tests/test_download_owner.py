"""Issue 22 item 6 on a launched app with sign-in: a download (adapter zip, prediction CSV) is served only to
the user it was made for, from owner-only folders inside the data directory, swept after MAX_AGE_S; nothing
else in the data directory is served; /openapi.json and the pages need sign-in."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import httpx

from apps import USERS


def signed_in(url, name, password) -> httpx.Client:
    http = httpx.Client(base_url=url, timeout=60)
    assert http.post("login", data={"username": name, "password": password}).status_code == 200
    return http


def gradio_copy(path: str) -> Path:
    """What Gradio does with a handler's returned file: a copy in its cache (GRADIO_TEMP_DIR)."""
    from gradio.processing_utils import save_file_to_cache

    return Path(save_file_to_cache(path, os.environ["GRADIO_TEMP_DIR"]))


def test_a_download_is_served_to_its_owner_only(signed_in_site):
    from ui.tempfiles import hand_out, new_download

    site = signed_in_site
    ctx, url, alice = site.ctx, site.url, site.users["alice"]
    out = new_download(ctx.data_dir, "predictions-job7.csv")
    out.write_text("sentence,prediction\nfine,positive\n")
    copy = gradio_copy(hand_out(out, alice))
    assert copy.is_relative_to(ctx.data_dir / "gradio-cache")
    for folder in (ctx.data_dir / "gradio-cache", ctx.data_dir / "downloads", out.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    link = f"gradio_api/file={copy}"
    assert signed_in(url, "alice", USERS["alice"]).get(link).text.endswith("fine,positive\n")
    theirs = signed_in(url, "bob", USERS["bob"]).get(link)  # bob has alice's link: 200 before
    assert theirs.status_code == 404 and "this download is not yours" in theirs.json()["detail"]
    assert httpx.get(f"{url}{link}").status_code in (401, 403, 404)  # nobody signed in: not served


def test_nothing_else_in_the_data_directory_is_served(signed_in_site):
    ctx, url = signed_in_site.ctx, signed_in_site.url
    http = signed_in(url, "alice", USERS["alice"])
    for target in (ctx.data_dir / "ia3app.db", ctx.data_dir / "gradio-cache"):
        r = http.get(f"gradio_api/file={target}")
        assert r.status_code == 403, (target, r.status_code)


OPEN = {"", "/", "/favicon.ico", "/theme.css", "/robots.txt", "/manifest.json", "/logout", "/v1/health"}
"""What answers without sign-in: the sign-in page and what it loads, sign-out, the API's health probe."""


def test_openapi_and_every_other_route_need_sign_in(signed_in_site):
    """/openapi.json was served without sign-in; now no route (without path parameters) answers 200
    without it, except the sign-in page's own files, sign-out and the API's health probe."""
    url, demo = signed_in_site.url, signed_in_site.demo
    assert httpx.get(f"{url}openapi.json").status_code == 404  # no schema while sign-in is on
    answered = []

    def walk(routes, prefix=""):
        for route in routes:
            path = prefix + getattr(route, "path", "")
            if hasattr(route, "routes") and not hasattr(route, "methods"):
                walk(route.routes, path)
            elif "{" not in path and "GET" in (getattr(route, "methods", None) or {"GET"}) and path not in OPEN:
                answered.append((path, httpx.get(url.rstrip("/") + path, timeout=60).status_code))

    walk(demo.app.routes)
    assert answered and all(code != 200 for _, code in answered), answered


def test_downloads_and_their_copies_are_swept(signed_in_site):
    from ui import tempfiles

    ctx, alice = signed_in_site.ctx, signed_in_site.users["alice"]
    out = tempfiles.new_download(ctx.data_dir, "ia3-adapter-job3.zip")
    out.write_bytes(b"zip bytes")
    copy = gradio_copy(tempfiles.hand_out(out, alice))
    assert tempfiles.sweep(ctx.data_dir) == 0 and out.exists() and copy.exists()  # fresh: still being served
    assert tempfiles.sweep(ctx.data_dir, max_age_s=-1) >= 2  # our folder and Gradio's copy
    assert not out.parent.exists() and not copy.parent.exists()
    assert tempfiles.download_owner(copy.parent.name) is None  # its link has expired


def test_download_folders_age_by_time(tmp_path):
    from ui import tempfiles

    out = tempfiles.new_download(tmp_path, "a.zip")
    out.write_bytes(b"zip")
    old = time.time() - tempfiles.MAX_AGE_S - 1
    os.utime(out.parent, (old, old))
    tempfiles.new_download(tmp_path, "p.csv")  # each new download sweeps the old ones
    assert not out.parent.exists()
