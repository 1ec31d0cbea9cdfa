"""Temporary download folders (adapter zips, prediction CSVs, a named dataset as CSV): owner-only, and swept once served.

A handler returns the file's path; Gradio copies it into its own cache (purged hourly, ui/app_layout.py)
when it answers, so our copy is only needed for that moment. Every new one sweeps this process's
user's folders older than MAX_AGE_S, and the app sweeps them at start.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

PREFIXES = ("ia3app-zip-", "ia3app-pred-", "ia3app-data-")
MAX_AGE_S = 600.0
"""A download folder older than this has been served (or abandoned)."""


def sweep(max_age_s: float = MAX_AGE_S, root: str | None = None) -> int:
    """Remove our download folders older than max_age_s; returns how many were removed."""
    base = Path(root or tempfile.gettempdir())
    removed, now = 0, time.time()
    for entry in base.iterdir() if base.is_dir() else []:
        try:
            st = entry.lstat()
        except OSError:
            continue
        if (entry.name.startswith(PREFIXES) and entry.is_dir() and not entry.is_symlink()
                and st.st_uid == os.getuid() and now - st.st_mtime > max_age_s):
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


def new_download(prefix: str, name: str) -> Path:
    """A path for one download in a fresh owner-only folder (mkdtemp: 0700), after sweeping old ones."""
    sweep()
    return Path(tempfile.mkdtemp(prefix=prefix)) / name
