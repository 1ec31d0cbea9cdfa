"""JSON text of the job types, made and read in exactly one place: :func:`dumps` / :func:`loads` (each
type's ``to_dict`` / ``from_dict`` give the JSON-able shape)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from ia3app.errors import UserError

T = TypeVar("T")


def dumps(obj: Any, indent: int | None = None) -> str:
    """JSON text of a JobSpec, JobRequest, ProgressEvent or JobResult (its ``to_dict()``)."""
    return json.dumps(obj.to_dict(), indent=indent)


def loads(cls: type[T], text: str | bytes) -> T:
    """The ``cls`` written by :func:`dumps`; UserError when the text is not one."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise UserError(f"not a stored {cls.__name__}: {exc}") from None
    return cls.from_dict(data)
