"""Before a job is queued: render a bounded sample of every file the job will use (training and
held-out), so a template that fails or is slow only on some rows is refused now, not in a worker.

The sample is spread over each file (first row, last row, evenly between); every sampled row runs
under the same per-row limits as training (ia3app.templates.render_limits). From the sample's time per row
the whole file's rendering time is estimated and refused above MAX_FILE_RENDER_SECONDS. Times are the
rendering thread's CPU time, so a busy machine does not make a template look slow.
"""

from __future__ import annotations

from typing import Any

from ia3app.errors import UserError
from ia3app.templates.render_limits import cpu_clock
from ia3app.templates.rendering import render
from ia3app.templates.spec import TemplateSpec

SAMPLE_ROWS = 24
"""Rows rendered per file at most."""
SAMPLE_SECONDS = 2.0
"""CPU time spent sampling one file at most (the estimate uses the rows done by then)."""
MAX_FILE_RENDER_SECONDS = 120.0
"""Longest the template may take to render one whole file (estimated from the sample)."""


def sample_rows(n: int, k: int = SAMPLE_ROWS) -> list[int]:
    """Up to k row indices spread over 0..n-1, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def check_files(spec: TemplateSpec, files: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """Render a sample of each named file; UserError naming the file and row when a row fails (any
    template refusal or misfit) or when the file would take too long. Returns seconds per row by file."""
    per_row: dict[str, float] = {}
    for name, rows in files.items():
        start, done = cpu_clock(), 0
        for i in sample_rows(len(rows)):
            try:
                render(spec, rows[i])
            except UserError as e:
                raise UserError(f"{name}, row {i + 1}: {e}") from None
            done += 1
            if cpu_clock() - start > SAMPLE_SECONDS:
                break
        seconds = (cpu_clock() - start) / max(done, 1)
        per_row[name] = seconds
        total = seconds * len(rows)
        if total > MAX_FILE_RENDER_SECONDS:
            raise UserError(
                f"template refused: rendering {name} ({len(rows):,} rows) would take about {total:,.0f} s "
                f"({seconds * 1000:,.0f} ms a row over {done} sampled rows); the limit is "
                f"{MAX_FILE_RENDER_SECONDS:g} s per file — simplify the template")
    return per_row
