"""Storage faults reach the person as words: every page event that fails on the database or the data
directory raises gr.Error with what happened and what to do (never Gradio's empty "Error" toast)."""

from __future__ import annotations

import functools
import inspect
import sqlite3
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from storage.db import corrupt_database
from storage.files import StorageError, is_disk_error, storage_error


def storage_message(exc: BaseException, data_dir: Path) -> str | None:
    """The words for a storage fault, or None when exc is not one."""
    if isinstance(exc, StorageError):
        return str(exc)
    if isinstance(exc, sqlite3.DatabaseError):
        text = str(exc)
        if "locked" in text or "busy" in text:
            return "the database is busy (another process holds it); try again in a moment"
        if "disk is full" in text or "readonly" in text or "disk I/O" in text or "unable to open" in text:
            return (f"the database in {data_dir} cannot be written ({text}); free some disk space or make the data "
                    "directory writable")
        return str(corrupt_database(data_dir, exc))
    if is_disk_error(exc):
        return str(storage_error(exc, getattr(exc, "filename", None) or "a file", data_dir))  # type: ignore[arg-type]
    return None


def _named(fn: Callable, data_dir: Path) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (sqlite3.DatabaseError, OSError) as exc:
            message = storage_message(exc, data_dir)
            if message is None:
                raise
            raise gr.Error(message) from None

    return wrapper


def name_storage_faults(demo: gr.Blocks, data_dir: Path) -> int:
    """Wrap every plain (synchronous, non-generator) event function of ``demo``; returns how many."""
    wrapped = 0
    for block_fn in demo.fns.values():
        fn = block_fn.fn
        if fn is None or inspect.iscoroutinefunction(fn) or inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            continue
        block_fn.fn = _named(fn, data_dir)
        wrapped += 1
    return wrapped
