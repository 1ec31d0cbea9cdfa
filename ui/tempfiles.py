"""Downloads (adapter zips, prediction CSVs): made in owner-only folders inside the data directory,
served only to the user they were made for, and swept once served.

    use_data_dir(data_dir)                   # at launch, before the pages are built
    out = new_download(data_dir, "ia3-adapter-job7.zip")   # <data>/downloads/<random>/ia3-adapter-job7.zip
    ... write it ...
    return hand_out(out, owner=uid)          # the path a handler gives Gradio

A handler returns the file's path; Gradio copies it into its cache, which :func:`use_data_dir` puts in
``<data>/gradio-cache`` (0700, so the copies — and users' uploads — are readable by nobody else on the
machine), and the browser fetches the copy from Gradio's ``/file=`` route. :class:`DownloadGuard`
stands in front of that route: a copy of a download is served only to the user it was made for
(found by its content hash, the folder Gradio names the copy after), anything else in the data
directory not at all. Our folders and Gradio's copies of downloads are swept MAX_AGE_S after they
were made (at start and with every new download), so a download link expires with them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from storage.db import make_private_dir

MAX_AGE_S = 600.0
"""A download older than this has been served (or abandoned): its folder and Gradio's copy go."""
DOWNLOADS = "downloads"
"""Our download folders, inside the data directory."""
GRADIO_CACHE = "gradio-cache"
"""Gradio's cache (its copies of uploads and downloads), inside the data directory."""

_owners: dict[str, tuple[int, float]] = {}
"""Gradio's cache folder name for a download (its content hash) -> (owner's user id, when made)."""
_lock = threading.Lock()


def use_data_dir(data_dir: Path) -> Path:
    """Put Gradio's cache in ``<data>/gradio-cache`` (owner-only), emptied of what an earlier run left
    (its downloads' owners are not known any more); call before building the pages (each component
    reads it when made). Returns the cache folder."""
    cache = Path(data_dir) / GRADIO_CACHE
    if cache.is_dir() and not cache.is_symlink():
        shutil.rmtree(cache, ignore_errors=True)
    make_private_dir(cache)
    make_private_dir(Path(data_dir) / DOWNLOADS)
    os.environ["GRADIO_TEMP_DIR"] = str(cache)
    return cache


def _old(path: Path, now: float, max_age_s: float) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False
    return path.is_dir() and not path.is_symlink() and now - st.st_mtime > max_age_s


def sweep(data_dir: Path, max_age_s: float = MAX_AGE_S) -> int:
    """Remove our download folders and Gradio's copies of downloads older than max_age_s; returns how many."""
    now, removed = time.time(), 0
    downloads, cache = Path(data_dir) / DOWNLOADS, Path(data_dir) / GRADIO_CACHE
    for entry in downloads.iterdir() if downloads.is_dir() else []:
        if _old(entry, now, max_age_s):
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    with _lock:
        expired = [name for name, (_, made) in _owners.items() if now - made > max_age_s]
        for name in expired:
            del _owners[name]
    for name in expired:
        if (cache / name).is_dir():
            shutil.rmtree(cache / name, ignore_errors=True)
            removed += 1
    return removed


def new_download(data_dir: Path, name: str) -> Path:
    """A path for one download in a fresh owner-only folder of ``<data>/downloads`` (after a sweep)."""
    sweep(data_dir)
    root = Path(data_dir) / DOWNLOADS
    make_private_dir(root)
    return Path(tempfile.mkdtemp(dir=root)) / name


def hand_out(path: Path, owner: int) -> str:
    """Record ``owner`` as the only user Gradio's copy of this (finished) file may be served to; the path
    to return to Gradio. The file is made owner-only (0600) too."""
    from gradio.processing_utils import hash_file

    os.chmod(path, 0o600)
    with _lock:
        _owners[hash_file(path)] = (owner, time.time())
    return str(path)


def download_owner(cache_folder: str) -> int | None:
    """Who a download whose copy sits in Gradio's cache folder ``cache_folder`` was made for (None: not a
    download, or swept)."""
    with _lock:
        entry = _owners.get(cache_folder)
    return None if entry is None else entry[0]


def _file_path(path: str) -> str | None:
    """The file a request for one of Gradio's file routes names, else None."""
    for marker in ("/file=", "/file/"):
        at = path.find(marker)
        if at >= 0 and path[:at] in ("", "/gradio_api"):
            return path[at + len(marker):]
    return None


class DownloadGuard:
    """ASGI middleware in front of Gradio's file routes: in the data directory only Gradio's cache is
    served, and a download's copy there only to the user it was made for (404 otherwise, in words).
    ``user_of(scope)`` gives the requesting user's id (None: not signed in)."""

    def __init__(self, app: Callable, data_dir: Path, user_of: Callable[[dict], object]):
        self.app, self.data_dir, self.user_of = app, Path(data_dir).resolve(), user_of
        self.cache = self.data_dir / GRADIO_CACHE

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        target = _file_path(scope.get("path", "")) if scope.get("type") == "http" else None
        if target is not None:
            refusal = await self.refusal(scope, Path(os.path.realpath(target)))
            if refusal is not None:
                body = json.dumps({"detail": refusal[1]}).encode()
                await send({"type": "http.response.start", "status": refusal[0],
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    async def refusal(self, scope: dict, real: Path) -> tuple[int, str] | None:
        from starlette.concurrency import run_in_threadpool

        if not real.is_relative_to(self.data_dir):
            return None  # Gradio's own rules apply
        if not real.is_relative_to(self.cache) or real == self.cache:
            return 403, "files in the data directory are not served"
        folder = real.relative_to(self.cache).parts[0]
        owner = download_owner(folder)
        if owner is None:
            return None  # not one of our downloads (e.g. an upload): Gradio's rules apply
        if owner != await run_in_threadpool(self.user_of, scope):
            return 404, ("this download is not yours, or its link has expired (links last "
                         f"{MAX_AGE_S / 60:g} minutes): make it again on the Results page")
        return None
