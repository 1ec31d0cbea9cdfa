"""Faults reach the person as words: every page event that fails on the database or the data directory,
or with a UserError its handler did not turn into words itself, raises gr.Error with what happened and
what to do (never Gradio's empty "Error" toast: Gradio shows only a gr.Error's message)."""

from __future__ import annotations

import functools
import inspect
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from ia3app.errors import UserError

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


@contextmanager
def _words(data_dir: Path) -> Iterator[None]:
    try:
        yield
    except gr.Error:
        raise
    except UserError as exc:
        raise gr.Error(str(exc)) from None
    except (sqlite3.DatabaseError, OSError) as exc:
        message = storage_message(exc, data_dir)
        if message is None:
            raise
        raise gr.Error(message) from None


def _named(fn: Callable, data_dir: Path) -> Callable:
    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def agen(*args: Any, **kwargs: Any) -> Any:
            with _words(data_dir):
                async for item in fn(*args, **kwargs):
                    yield item
        return agen
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def coro(*args: Any, **kwargs: Any) -> Any:
            with _words(data_dir):
                return await fn(*args, **kwargs)
        return coro
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args: Any, **kwargs: Any) -> Any:
            with _words(data_dir):
                return (yield from fn(*args, **kwargs))
        return gen

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _words(data_dir):
            return fn(*args, **kwargs)

    return wrapper


def name_storage_faults(demo: gr.Blocks, data_dir: Path) -> int:
    """Wrap every event function of ``demo`` (plain, generator or async); returns how many."""
    wrapped = 0
    for block_fn in demo.fns.values():
        if block_fn.fn is not None:
            block_fn.fn = _named(block_fn.fn, data_dir)
            wrapped += 1
    return wrapped
