"""The file store: uploads, checkpoints and adapters under one data directory.

- Every write is atomic: a temporary file in the same directory, fsync, ``os.replace``; a
  failure (disk full, read-only directory) removes the temporary file and raises a
  :class:`StorageError` that says what happened and what to do.
- Paths are built only from ids and generated keys, never from a user's file name.
- :meth:`FileStore.resolve` refuses any relative path that would leave the data directory.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from common.errors import UserError

SUBDIRS = ("uploads", "checkpoints", "adapters", "logs")
JOB_KEY_FILE = ".job-key"
"""In a job's checkpoint and adapter folders: the key of the job they belong to."""
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EFBIG}


class StorageError(UserError):
    """The data directory cannot be written (disk full, read-only, wrong permissions, not a directory)."""


def storage_error(exc: OSError, what: str, root: Path) -> StorageError:
    """Word an OSError from writing ``what`` for a person (the app's operator)."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        advice = "free some disk space there, or point IA3APP_DATA_DIR at a disk with room"
    else:
        advice = "make it writable by the app, or point IA3APP_DATA_DIR at a writable directory"
    return StorageError(f"could not write {what} in the data directory {root}: {reason}; {advice}")


def is_disk_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS


def new_key() -> str:
    """A random file key (32 hex digits) for files written before their row has an id."""
    return uuid.uuid4().hex


class FileStore:
    """Files under ``root`` (the data directory). Relative paths (``relpath``) are what rows store."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        for sub in SUBDIRS:
            try:
                if not (self.root / sub).is_dir():
                    (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise storage_error(exc, f"the folder {sub}/", self.root) from exc

    # ----- paths -----------------------------------------------------------------------------
    def resolve(self, relpath: str | Path) -> Path:
        """Absolute path of ``relpath`` inside the data directory; anything outside is refused."""
        rel = Path(relpath)
        if rel.is_absolute() or not str(relpath).strip():
            raise UserError(f"refused path {str(relpath)!r}: files are only served from inside the data directory")
        full = (self.root / rel).resolve()  # follows symlinks, so a link pointing out is caught too
        if full != self.root and not full.is_relative_to(self.root):
            raise UserError(f"refused path {str(relpath)!r}: files are only served from inside the data directory")
        return full

    def relpath(self, path: str | Path) -> str:
        """The relative path rows store for an absolute path inside the data directory."""
        full = Path(path).resolve()
        if not full.is_relative_to(self.root):
            raise UserError(f"{path} is not inside the data directory {self.root}")
        return full.relative_to(self.root).as_posix()

    def upload_path(self, key: str, suffix: str) -> str:
        if not key.isalnum() or not suffix.replace(".", "").isalnum():
            raise ValueError(f"bad upload key {key!r} / suffix {suffix!r}")
        return f"uploads/{key}{suffix}"

    def checkpoint_dir(self, job_id: int) -> Path:
        return self._job_dir("checkpoints", job_id)

    def adapter_dir(self, job_id: int) -> Path:
        return self._job_dir("adapters", job_id)

    def _job_dir(self, kind: str, job_id: int) -> Path:
        if not isinstance(job_id, int) or isinstance(job_id, bool) or job_id < 1:
            raise ValueError(f"job id must be a positive int, got {job_id!r}")
        path = self.root / kind / str(job_id)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, f"the folder {kind}/{job_id}/", self.root) from exc
        return path

    def bind_job_dirs(self, job_id: int, job_key: str | None) -> list[str]:
        """Make checkpoints/<id> and adapters/<id> this job's: a folder left by another job with the same
        id (a replaced database) is moved to stale/ (never resumed, never reused; see `python -m
        storage.admin`), and `.job-key` records whose the folders are. Returns the folders moved aside."""
        moved = []
        for kind in ("checkpoints", "adapters"):
            folder = self._job_dir(kind, job_id)
            marker = folder / JOB_KEY_FILE
            owner = marker.read_text().strip() if marker.is_file() else None
            if owner != job_key and (owner is not None or any(folder.iterdir())):
                stale = self.root / "stale" / f"{kind}-{job_id}-{owner or 'unknown'}-{uuid.uuid4().hex[:8]}"
                try:
                    stale.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(folder, stale)
                    folder.mkdir()
                except OSError as exc:
                    raise storage_error(exc, f"the folder {kind}/{job_id}/", self.root) from exc
                moved.append(self.relpath(stale))
            if job_key and owner != job_key:
                self.write_bytes(f"{kind}/{job_id}/{JOB_KEY_FILE}", job_key.encode())
        return moved

    def job_dir_key(self, kind: str, job_id: int) -> str | None:
        """The job key recorded in checkpoints/<id> or adapters/<id>, or None."""
        marker = self.root / kind / str(job_id) / JOB_KEY_FILE
        return marker.read_text().strip() if marker.is_file() else None

    # ----- atomic writes ---------------------------------------------------------------------
    def write_bytes(self, relpath: str, data: bytes) -> Path:
        """Write ``data`` to ``relpath`` atomically; returns the absolute path."""
        target = self.resolve(relpath)
        tmp_name = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".part")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, target)
            tmp_name = None
            _fsync_dir(target.parent)
        except OSError as exc:
            raise storage_error(exc, relpath, self.root) from exc
        finally:
            if tmp_name is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp_name)
        return target

    def write_json(self, relpath: str, obj: Any) -> Path:
        return self.write_bytes(relpath, json.dumps(obj, ensure_ascii=False).encode("utf-8"))

    def read_bytes(self, relpath: str) -> bytes:
        return self.resolve(relpath).read_bytes()

    def read_json(self, relpath: str) -> Any:
        return json.loads(self.read_bytes(relpath).decode("utf-8"))

    def remove(self, relpath: str) -> None:
        """Remove a file or a directory tree inside the data directory (missing is fine)."""
        target = self.resolve(relpath)
        if target == self.root:
            raise ValueError("refusing to remove the data directory itself")
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=False)
        else:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()

    def size(self, relpath: str) -> int:
        """Bytes of a file, or of every file under a directory."""
        target = self.resolve(relpath)
        if target.is_file():
            return target.stat().st_size
        return sum(p.stat().st_size for p in target.rglob("*") if p.is_file())


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not every filesystem allows opening a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # fsync on a directory is unsupported on some filesystems; the rename already happened
    finally:
        os.close(fd)

