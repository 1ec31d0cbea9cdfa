"""Reading an uploaded file within the upload limit (the data page's CSVs, the results page's CSV to predict)."""

from __future__ import annotations

from pathlib import Path

from ia3app.errors import UserError
from ui.context import AppContext


def upload_size(path: str | None, ctx: AppContext, what: str = "file") -> int:
    """The upload's size in bytes; UserError (saying the limit) when there is none or it is too large."""
    if not path:
        raise UserError(f"no {what} uploaded: drop a CSV file on the box")
    size = Path(path).stat().st_size
    if size > ctx.max_upload_bytes:
        raise UserError(f"the {what} is {size / 1e6:.1f} MB; the limit is {ctx.max_upload_bytes / 1e6:g} MB. "
                        "Few-shot training needs only a few dozen rows: upload a smaller sample")
    return size


def read_upload(path: str | None, ctx: AppContext, what: str = "file") -> bytes:
    """The uploaded bytes, refusing early (and saying the limit) when they exceed the size limit."""
    upload_size(path, ctx, what)
    return Path(path).read_bytes()
