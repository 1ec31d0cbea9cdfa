"""The serving interface: what the app (live predictions, batch CSVs, /predict and the JSON API) asks of
whatever answers predictions. Two implementations: ``ia3app.serving.engine.ServingEngine`` (in this
process) and ``jobs.ray_serve.RayServing`` (a client of Ray Serve replicas that each run a
ServingEngine). ``ui.context.AppContext.engine()`` returns one of them. Torch-free.
"""

from __future__ import annotations

from collections.abc import Hashable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ia3app.serving.bank import AdapterInfo
    from ia3app.serving.lane import Prediction


@runtime_checkable
class Serving(Protocol):
    def info(self, adapter_dir: str | Path) -> "AdapterInfo":
        """The adapter's template, choices, model and calibration (read from its folder; UserError if none)."""

    def submit(self, adapter_dir: str | Path, rows: list[dict], embed: bool = False,
               client: Hashable | None = None) -> "Future[list[Prediction]]":
        """Queue rows for an adapter; the Future gives one Prediction per row (or the request's error);
        with ``embed`` each carries the input's representation (Prediction.embedding). ``client`` (e.g. a
        user) is served in turn with the other clients waiting, never behind one's many rows."""

    def predict(self, adapter_dir: str | Path, rows: list[dict], timeout: float | None = None,
                embed: bool = False) -> "list[Prediction]":
        """One Prediction per row (blocks until they are answered)."""

    def predict_csv(self, adapter_dir: str | Path, data: bytes, *, max_bytes: int = 5_000_000,
                    max_rows: int = 10_000) -> bytes:
        """A CSV in, the same CSV out with the prediction columns (ia3app.serving.engine.predict_csv)."""

    def stats(self) -> dict[str, Any]:
        """What an operator reads about the engine's state."""

    def close(self) -> None:
        """Finish what is queued and release the engine's threads."""
