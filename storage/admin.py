"""Operator commands for the data directory: ``python -m storage.admin [--data-dir D] COMMAND``.

    python -m storage.admin list-stale      # job folders no job owns, and folders moved aside
    python -m storage.admin clean-stale     # remove them (prints what it removes)

A job's checkpoint and adapter folders (checkpoints/<id>, adapters/<id>) carry the job's random key
in `.job-key`. A folder is stale when no job row has its id (the database was replaced or deleted),
or when its key is another job's; the worker never resumes such a folder — it moves it to stale/
when a new job with that id starts. This command reports and cleans them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from storage.db import data_dir, open_db
from storage.files import JOB_KEY_FILE


@dataclass
class Stale:
    path: Path
    reason: str
    bytes: int


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def find_stale(root: Path, db) -> list[Stale]:
    """Job folders no job owns, and everything under stale/."""
    keys = {int(i): k for i, k in db.execute("SELECT id, job_key FROM jobs").fetchall()}
    out = []
    for kind in ("checkpoints", "adapters"):
        base = root / kind
        for folder in sorted(base.iterdir()) if base.is_dir() else []:
            if not folder.is_dir():
                continue
            if not folder.name.isdigit():
                out.append(Stale(folder, "not a job folder", _size(folder)))
                continue
            marker = folder / JOB_KEY_FILE
            key = marker.read_text().strip() if marker.is_file() else None
            job_id = int(folder.name)
            if job_id not in keys:
                out.append(Stale(folder, f"no job #{job_id} in the database", _size(folder)))
            elif key is not None and keys[job_id] is not None and key != keys[job_id]:
                out.append(Stale(folder, f"belongs to another job than #{job_id} (key {key[:8]}…)", _size(folder)))
    moved = root / "stale"
    for folder in sorted(moved.iterdir()) if moved.is_dir() else []:
        out.append(Stale(folder, "moved aside when a new job took its id", _size(folder)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m storage.admin", description="ia3app data-directory upkeep.")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $IA3APP_DATA_DIR or ./data")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list-stale", help="report job folders that no job owns")
    sub.add_parser("clean-stale", help="remove job folders that no job owns")
    args = parser.parse_args(argv)
    root = Path(args.data_dir or data_dir()).resolve()
    db = open_db(root)
    try:
        stale = find_stale(root, db)
    finally:
        db.conn.close()
    for item in stale:
        verb = "removing " if args.command == "clean-stale" else ""
        print(f"{verb}{item.path.relative_to(root)}\t{item.bytes:,} bytes\t{item.reason}")
        if args.command == "clean-stale":
            shutil.rmtree(item.path) if item.path.is_dir() and not item.path.is_symlink() else item.path.unlink()
    total = sum(i.bytes for i in stale)
    done = "removed" if args.command == "clean-stale" else "found"
    print(f"{len(stale)} stale folder(s) {done}, {total:,} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
