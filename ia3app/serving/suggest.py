"""Which unlabelled rows to label next: uncertainty ranking, spread out on the model's own representations.

    from ia3app.serving.suggest import suggest
    result = suggest(engine, "data/adapters/7", pool_rows, n=8, exclude={3, 10})
    result.suggestions[0].top   # [{"label": "positive", "choice": "good", "probability": 0.52}, {...: 0.48}]

The rule (one place, used by the worker's suggest job, the CLI and the HTTP API):

1. **Score** every pool row not yet labelled or skipped through the serving engine (the same batched,
   rendered, fitted path as predictions), in chunks of ``SCORE_CHUNK_ROWS`` rows so progress is
   reported and a cancel is honoured between chunks. Each row also returns its **representation**:
   the adapter-scaled model's last hidden state mean-pooled over the prompt's tokens (the encoder's
   output for encoder-decoder models, the last layer over the input for decoder-only ones), computed
   in the same forward as the scores (ia3app.evaluation.scoring.ChoiceLogProbs.pooled).
2. **Uncertainty**: the margin p(top choice) − p(second choice) of the (calibrated) probabilities; the
   ``CANDIDATE_FACTOR × n`` rows with the smallest margins are the candidates.
3. **Diversity**: greedy farthest-point (k-center) selection among the candidates on cosine distance
   of the L2-normalised representations: the least sure candidate first, then repeatedly the candidate
   farthest from every row chosen so far (ties: the smaller margin). Near-duplicates of a chosen row are
   therefore picked last. The rows come back in the order chosen.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from ia3app.errors import Cancelled, UserError
from ia3app.jobtypes import DEFAULT_SUGGEST_N, MAX_SUGGEST_N, Suggestion, SuggestResult
from ia3app.serving.lane import label_for_choice

if TYPE_CHECKING:
    from ia3app.serving.bank import AdapterInfo
    from ia3app.serving.interface import Serving
    from ia3app.serving.lane import Prediction

CANDIDATE_FACTOR = 4
"""The diversity rule chooses among this many times n of the least sure rows."""
SCORE_CHUNK_ROWS = 64
"""Rows per engine request while scoring a pool (progress and cancel between chunks)."""
METHOD = ("smallest margin between the top two choices; among the 4×N least sure rows, greedy farthest-point "
          "(k-center) selection on cosine distance of the adapter's mean-pooled last hidden state of the prompt")


def top_two(info: "AdapterInfo", prediction: "Prediction") -> tuple[float, list[dict[str, Any]]]:
    """(margin, the two most likely answers as {"label", "choice", "probability"}) of one prediction.
    With a single choice the margin is 1 (nothing to decide)."""
    ranked = sorted(enumerate(prediction.probabilities.items()), key=lambda item: -item[1][1])[:2]
    top = [{"label": label_for_choice(info, index, choice), "choice": choice, "probability": float(p)}
           for index, (choice, p) in ranked]
    margin = top[0]["probability"] - top[1]["probability"] if len(top) > 1 else 1.0
    return margin, top


def pick(margins: Sequence[float], embeddings: Any, n: int, factor: int = CANDIDATE_FACTOR) -> list[int]:
    """Indices (into margins/embeddings) of the n rows to label: the factor × n smallest margins, then greedy
    farthest-point selection on cosine distance, starting from the smallest margin. See the module doc."""
    import numpy as np

    if n < 1:
        return []
    margins = np.asarray(margins, dtype=np.float64)
    order = np.argsort(margins, kind="stable")
    candidates = order[: max(n, factor * n)]
    if len(candidates) <= n:
        return [int(i) for i in candidates]
    vectors = np.asarray(embeddings, dtype=np.float64)[candidates]
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    chosen = [0]  # candidates are sorted by margin: the least sure row first
    nearest = 1.0 - vectors @ vectors[0]  # each candidate's cosine distance to the chosen set
    nearest[0] = -np.inf
    while len(chosen) < n:
        best = float(nearest.max())
        # ties (e.g. duplicates of nothing chosen yet at equal distance): the smaller margin, i.e. the earlier index
        nxt = int(np.flatnonzero(nearest >= best - 1e-12)[0])
        chosen.append(nxt)
        nearest = np.minimum(nearest, 1.0 - vectors @ vectors[nxt])
        nearest[chosen] = -np.inf
    return [int(candidates[i]) for i in chosen]


def score_pool(engine: "Serving", adapter_dir: str | Path, rows: list[dict], *,
               chunk_rows: int = SCORE_CHUNK_ROWS, progress: Callable[[int, int], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> list["Prediction"]:
    """One Prediction (with its representation) per row, through the engine, chunk by chunk; progress(done,
    total) after each chunk; Cancelled when should_stop() says so between chunks."""
    out: list = []
    for start in range(0, len(rows), chunk_rows):
        if should_stop is not None and should_stop():
            raise Cancelled("suggestions cancelled")
        out += engine.predict(adapter_dir, rows[start : start + chunk_rows], embed=True)
        if progress is not None:
            progress(len(out), len(rows))
    return out


def suggest(engine: "Serving", adapter_dir: str | Path, rows: list[dict], n: int = DEFAULT_SUGGEST_N, *,
            exclude: Iterable[int] = (), progress: Callable[[int, int], None] | None = None,
            should_stop: Callable[[], bool] | None = None, chunk_rows: int = SCORE_CHUNK_ROWS) -> SuggestResult:
    """The n pool rows to label next (module doc), leaving out the row indices in ``exclude``."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SUGGEST_N:
        raise UserError(f"the number of rows to suggest must be a whole number from 1 to {MAX_SUGGEST_N} (got {n!r})")
    if not rows:
        raise UserError("the pool has no rows to suggest from")
    excluded = {int(i) for i in exclude if 0 <= int(i) < len(rows)}
    left = [i for i in range(len(rows)) if i not in excluded]
    if not left:
        raise UserError(f"every one of the pool's {len(rows)} rows is labelled or skipped already; upload more "
                        "unlabelled rows")
    info = engine.info(adapter_dir)
    start = time.perf_counter()
    predictions = score_pool(engine, adapter_dir, [rows[i] for i in left], chunk_rows=chunk_rows,
                             progress=progress, should_stop=should_stop)
    elapsed = time.perf_counter() - start
    why = [top_two(info, p) for p in predictions]
    chosen = pick([m for m, _ in why], [p.embedding for p in predictions], n)
    suggestions = [Suggestion(index=left[i], row=dict(rows[left[i]]), margin=why[i][0], top=why[i][1]) for i in chosen]
    return SuggestResult(suggestions=suggestions, scored=len(left), excluded=len(excluded),
                         rows_per_s=len(left) / elapsed if elapsed > 0 else 0.0,
                         candidates=min(len(left), CANDIDATE_FACTOR * n), method=METHOD)
