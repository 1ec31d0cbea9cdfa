"""Speed probes: the train page asks, a worker times a few training steps of a model, the page reads the cost.

The web process never trains (README: "Training never runs in the web process"); when no earlier job
of a model tells what its steps cost here, the train page files a probe request (:func:`request`),
a worker takes it between jobs (:func:`claim`, run by jobs.worker with
ia3app.recipe.step_probe.probe_step_cost, a few seconds for a small model) and stores the fitted
:class:`~ia3app.recipe.step_cost.StepCost` of a training step, the measured points of a scoring batch
(evaluation) and the model's load time (:func:`finish` / :func:`fail`); :func:`latest` reads them.
One row per (model, batch size, precision); a probe a worker took but never finished (the worker
died) is taken again after STALE_S, a failed one is tried again after RETRY_S, and one done before
scoring was measured is taken again.

No torch here: the web process imports this module.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import sqlite_utils

from ia3app.config import RecipeConfig
from ia3app.recipe.step_cost import Load, Point, StepCost, fit
from storage.db import fetch_one, transaction

STALE_S = 600.0
RETRY_S = 600.0


@dataclass(frozen=True)
class ProbeRow:
    id: int
    model: str
    batch_size: int
    precision: str
    max_length: int
    status: str
    """'queued', 'running', 'done' or 'failed'."""
    cost: StepCost | None
    """Of a training step."""
    points: list[Point]
    message: str | None
    finished: float | None
    load_s: float | None = None
    """Seconds the worker took to load the model."""
    score_points: tuple[Point, ...] = ()
    """Measured scoring batches (evaluation's forward pass)."""
    requested: float | None = None

    @classmethod
    def from_row(cls, row: dict) -> "ProbeRow":
        cost = StepCost(row["overhead_s"], row["per_token_s"], row["per_pair_s"]) if row["status"] == "done" else None
        return cls(row["id"], row["model"], row["batch_size"], row["precision"], row["max_length"], row["status"],
                   cost, _points(row["points"]), row["message"], row["finished"], row.get("load_s"),
                   tuple(_points(row.get("score_points"))), row.get("requested"))

    @property
    def score_cost(self) -> StepCost | None:
        """What a scoring batch costs (fitted to score_points); None for a probe that did not measure it."""
        return fit(self.score_points) if self.score_points else None

    def recipe(self) -> RecipeConfig:
        return RecipeConfig(batch_size=self.batch_size, precision=self.precision, max_length=self.max_length,
                            steps=8, warmup_steps=0, checkpoint_every=0)


def _points(text: str | None) -> list[Point]:
    return [Point(Load(tokens, pairs), seconds, weight) for tokens, pairs, seconds, weight in json.loads(text or "[]")]


def _json(points) -> str:
    return json.dumps([[p.load.tokens, p.load.pairs, p.seconds_per_step, p.weight] for p in points])


def latest(db: sqlite_utils.Database, model: str, recipe: RecipeConfig) -> ProbeRow | None:
    row = fetch_one(db, "SELECT * FROM speed_probes WHERE model = ? AND batch_size = ? AND precision = ?",
                    [model, recipe.batch_size, recipe.precision])
    return ProbeRow.from_row(row) if row else None


def request(db: sqlite_utils.Database, model: str, recipe: RecipeConfig) -> ProbeRow:
    """Ask for a probe of `model` at the recipe's batch size and precision (nothing new when one is done,
    waiting or running; a failed one is asked again after RETRY_S, one done without scoring points at once).
    Returns the row as it stands."""
    now = time.time()
    with transaction(db):
        db.execute(
            "INSERT INTO speed_probes (model, batch_size, precision, max_length, status, requested)"
            " VALUES (?, ?, ?, ?, 'queued', ?) ON CONFLICT (model, batch_size, precision) DO UPDATE SET"
            " status = 'queued', requested = excluded.requested, max_length = excluded.max_length, message = NULL"
            " WHERE (status = 'failed' AND finished < ?) OR (status = 'done' AND score_points IS NULL)",
            [model, recipe.batch_size, recipe.precision, recipe.max_length, now, now - RETRY_S])
    found = latest(db, model, recipe)
    assert found is not None
    return found


def claim(db: sqlite_utils.Database, worker_id: str) -> ProbeRow | None:
    """The latest asked-for waiting probe (the model a user looks at now; or one whose worker vanished), now held
    by `worker_id`; None if there is none."""
    now = time.time()
    with transaction(db):
        row = fetch_one(db, "SELECT * FROM speed_probes WHERE status = 'queued' OR (status = 'running' AND started < ?)"
                            " ORDER BY requested DESC LIMIT 1", [now - STALE_S])
        if row is None:
            return None
        db.execute("UPDATE speed_probes SET status = 'running', worker_id = ?, started = ? WHERE id = ?",
                   [worker_id, now, row["id"]])
    return ProbeRow.from_row({**row, "status": "running"})


def newer_waiting(db: sqlite_utils.Database, probe: ProbeRow) -> bool:
    """Whether a probe asked for after this one waits (the user picked another model meanwhile): this one
    then gives way to it (the page shows the model the user looks at now)."""
    row = db.execute("SELECT 1 FROM speed_probes WHERE status = 'queued' AND id != ? AND requested >"
                     " (SELECT requested FROM speed_probes WHERE id = ?) LIMIT 1", [probe.id, probe.id]).fetchone()
    return row is not None


def finish(db: sqlite_utils.Database, probe_id: int, cost: StepCost, points: list[Point], load_s: float,
           score_points: list[Point]) -> None:
    with transaction(db):
        db.execute("UPDATE speed_probes SET status = 'done', finished = ?, overhead_s = ?, per_token_s = ?,"
                   " per_pair_s = ?, points = ?, load_s = ?, score_points = ?, message = NULL WHERE id = ?",
                   [time.time(), cost.overhead_s, cost.per_token_s, cost.per_pair_s, _json(points), load_s,
                    _json(score_points), probe_id])


def release(db: sqlite_utils.Database, probe_id: int) -> None:
    """Give a probe back (the worker stopped it for a job, or is shutting down): taken again later."""
    with transaction(db):
        db.execute("UPDATE speed_probes SET status = 'queued', worker_id = NULL, started = NULL WHERE id = ?",
                   [probe_id])


def fail(db: sqlite_utils.Database, probe_id: int, message: str) -> None:
    with transaction(db):
        db.execute("UPDATE speed_probes SET status = 'failed', finished = ?, message = ? WHERE id = ?",
                   [time.time(), message, probe_id])
