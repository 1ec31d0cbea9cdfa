"""What a training step costs, from what it carries: seconds = overhead + per_token × tokens + per_pair × pairs.

A step's time on a given machine and model has a fixed part (the optimizer, kernel launches, Python:
what dominates a small model), a part that grows with the tokens the forward and backward pass carry,
padding included, and a part that grows with attention's token pairs (quadratic in the padded lengths:
for a small model at a few hundred tokens it is most of the step). For an encoder-decoder batch of n
inputs padded to S tokens and R choice rows padded to T: tokens = n·S + R·T, pairs = n·S² + R·T·(T + S).
A decoder-only model reads each input once with its K choices in slots after it (the shared prefix of
ia3app.evaluation.scoring): n rows of W = S + K·T tokens, tokens = n·W, pairs = n·W²; without the shared
prefix each choice row carries its input again: tokens = R·(S + T), pairs = R·(S + T)².

Scoring (evaluation) is the same forward pass without the backward one: a batch of it costs
overhead + per_token × tokens + per_pair × pairs too, with its own coefficients (:func:`evaluation_batches`
lists the batches an evaluation scores, in the order ia3app.evaluation.compare scores them).

:func:`shape_of` computes a dataset's mean figures per step for the recipe's batch size, drawing
batches at random as training does; :class:`StepCost` is fitted (:func:`fit`) to measured points:
a worker's short probe on synthetic rows of three lengths (ia3app.recipe.step_probe.probe_step_cost)
and the finished jobs of the same model (their recorded tokens, pairs and wall time).

No torch here: the web process computes estimates with it.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Load:
    """What one step carries (means over a run's steps)."""

    tokens: float
    pairs: float


@dataclass(frozen=True)
class StepCost:
    overhead_s: float
    """Seconds a step costs whatever its size."""
    per_token_s: float
    """Seconds per padded token a step carries."""
    per_pair_s: float = 0.0
    """Seconds per attention token pair."""

    def step_seconds(self, load: Load) -> float:
        return self.overhead_s + self.per_token_s * load.tokens + self.per_pair_s * load.pairs


@dataclass(frozen=True)
class Point:
    load: Load
    seconds_per_step: float
    weight: float = 1.0


def _solve(a: list[list[float]], b: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting; None for a singular system."""
    n = len(b)
    m = [row[:] + [v] for row, v in zip(a, b)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-300:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(n):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [x - f * y for x, y in zip(m[r], m[col])]
    return [m[i][n] / m[i][i] for i in range(n)]


def fit(points: Sequence[Point]) -> StepCost:
    """Weighted least squares of seconds on (1, tokens, pairs), every coefficient ≥ 0: the best of the
    fits over each subset of the three terms whose coefficients all come out non-negative (a handful of
    points cannot always separate all three; one point is then taken as proportional to its tokens)."""
    if not points:
        raise ValueError("no measured points to fit a step cost to")
    scale = [1.0, max(p.load.tokens for p in points) or 1.0, max(p.load.pairs for p in points) or 1.0]
    rows = [[1.0, p.load.tokens / scale[1], p.load.pairs / scale[2]] for p in points]
    best, best_err = None, float("inf")
    for k in (1, 2, 3):
        for terms in itertools.combinations(range(3), k):
            a = [[sum(p.weight * r[i] * r[j] for p, r in zip(points, rows)) for j in terms] for i in terms]
            b = [sum(p.weight * r[i] * p.seconds_per_step for p, r in zip(points, rows)) for i in terms]
            coef = _solve(a, b)
            if coef is None or any(c < 0 for c in coef):
                continue
            full = [0.0, 0.0, 0.0]
            for i, c in zip(terms, coef):
                full[i] = c
            err = sum(p.weight * (sum(f * x for f, x in zip(full, r)) - p.seconds_per_step) ** 2
                      for p, r in zip(points, rows))
            if err < best_err * (1 - 1e-9):  # fewer terms win a tie
                best, best_err = full, err
    assert best is not None  # the overhead alone is always a non-negative fit
    return StepCost(best[0], best[1] / scale[1], best[2] / scale[2])


@dataclass(frozen=True)
class DataShape:
    """What a dataset's rows weigh per training step (the estimate says these figures)."""

    rows: int
    mean_input_tokens: float
    mean_answer_tokens: float
    choices: float
    """Mean answer choices per row."""
    load: Load
    """Padded tokens and attention pairs one step carries (see the module docstring)."""


def padded_load(n: int, s: int, r: int, t: int, enc_dec: bool, k: int = 0, prefix: int = 0) -> Load:
    """What a batch of n inputs padded to s tokens and r choice rows padded to t tokens carries. k: for a
    decoder-only model reading each input once (the shared prefix), the slots per row (the most choices of
    an example in the batch); 0: one row per choice, the input repeated. prefix (with k): leading tokens
    common to every input, read once for the batch (scoring.common_prefix_length)."""
    if enc_dec:
        return Load(n * s + r * t, n * s * s + r * t * (t + s))
    if k:
        width = s + k * t
        rest = width - prefix  # each row's own columns, which attend to the prefix too
        return Load(prefix + n * rest, prefix * prefix + n * rest * width)
    return Load(r * (s + t), r * (s + t) ** 2)


def batch_load(input_lens: Sequence[int], choice_lens: Sequence[Sequence[int]], enc_dec: bool) -> Load:
    """What one batch of these rows carries once padded, as training and scoring pad it (batches.TokenCache,
    scoring.choice_log_probs; a decoder-only model with the shared prefix)."""
    return padded_load(len(input_lens), max(input_lens), sum(len(lens) for lens in choice_lens),
                       max(max(lens, default=1) for lens in choice_lens), enc_dec,
                       k=max(len(lens) for lens in choice_lens))


def shape_of(input_lens: Sequence[int], choice_lens: Sequence[Sequence[int]], batch_size: int, enc_dec: bool, *,
             draws: int = 200, seed: int = 0) -> DataShape:
    """Mean load per step of `batch_size` rows drawn at random from rows with these input token lengths
    and, per row, answer-choice token lengths."""
    n = len(input_lens)
    if n == 0 or len(choice_lens) != n:
        raise ValueError("one list of choice lengths per input is needed, and at least one row")
    rng = random.Random(seed)
    tokens = pairs = 0.0
    for _ in range(draws):
        rows = [rng.randrange(n) for _ in range(batch_size)]
        load = batch_load([input_lens[r] for r in rows], [choice_lens[r] for r in rows], enc_dec)
        tokens, pairs = tokens + load.tokens, pairs + load.pairs
    answers = [c for lens in choice_lens for c in lens]
    return DataShape(rows=n, mean_input_tokens=sum(input_lens) / n,
                     mean_answer_tokens=sum(answers) / len(answers) if answers else 0.0,
                     choices=len(answers) / n, load=Load(tokens / draws, pairs / draws))


LATENCY_RUNS = 3
"""Timed scoring runs per evaluated method (ia3app.evaluation.compare; its latency is their median): the
first over every held-out row,"""
REPEAT_ROWS = 16
"""the others over at most this many rows (few, since a real model on a CPU scores a few rows a second and
the repeats must not cost as much as the evaluation)."""


@dataclass(frozen=True)
class Row:
    """One example as scoring sees it: its input's length in characters (scoring batches rows in that order),
    its input's tokens and its choices' tokens."""

    chars: int
    input_tokens: int
    choice_tokens: tuple[int, ...]


def _batches(rows: Sequence[Row], batch_size: int, enc_dec: bool) -> list[Load]:
    ordered = sorted(rows, key=lambda r: r.chars)  # evaluation.scoring.score_choices: by input length
    return [batch_load([r.input_tokens for r in ordered[b: b + batch_size]],
                       [r.choice_tokens for r in ordered[b: b + batch_size]], enc_dec)
            for b in range(0, len(ordered), batch_size)]


def evaluation_passes(rows: Sequence[Row], batch_size: int, enc_dec: bool, *,
                      warmup: bool = True) -> tuple[list[Load], list[Load]]:
    """The batches one method's evaluation scores (ia3app.evaluation.compare._timed_scores), as (every row
    once, the rest: a warm-up batch of the first rows and LATENCY_RUNS - 1 timed repeats over the first
    REPEAT_ROWS rows); each pass sorted by input length and cut into batches, as scoring does."""
    rest = ([rows[:batch_size]] if warmup else []) + [rows[:REPEAT_ROWS]] * (LATENCY_RUNS - 1)
    return _batches(rows, batch_size, enc_dec), [load for part in rest for load in _batches(part, batch_size, enc_dec)]
