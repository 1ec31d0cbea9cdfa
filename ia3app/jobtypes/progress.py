"""What a running job reports: :class:`ProgressEvent` s, one per phase change or training step. The
estimated time left of a training run is computed in :meth:`ProgressEvent.train_step` only."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable

from ia3app.errors import UserError

PHASES = ("prepare", "validate", "load", "train", "evaluate", "export", "score", "done")
""""score": a suggest job scoring an unlabelled pool (step = rows scored, total_steps = rows to score)."""


@dataclass
class ProgressEvent:
    """One progress report. ``phase`` is one of PHASES; train events carry the step figures."""

    phase: str
    message: str | None = None
    step: int | None = None
    """Optimizer steps done (1-based)."""
    total_steps: int | None = None
    loss: float | None = None
    loss_lm: float | None = None
    loss_ul: float | None = None
    loss_ln: float | None = None
    lr: float | None = None
    examples_per_s: float | None = None
    elapsed_s: float | None = None
    """Seconds since this run (attempt) of the training loop began."""
    eta_s: float | None = None
    # Filled in by the store when an event is read back (None on the way in):
    id: int | None = None
    attempt: int | None = None
    created: float | None = None

    STORE_FIELDS = ("id", "attempt", "created")

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"unknown progress phase {self.phase!r}; known: {', '.join(PHASES)}")

    @classmethod
    def train_step(cls, *, step: int, total_steps: int, first_step: int, elapsed_s: float, losses: dict[str, float],
                   lr: float, batch_size: int) -> "ProgressEvent":
        """The event after optimizer step ``step``; this run began at ``first_step`` (> 0 after a resume)
        ``elapsed_s`` ago. Rate, examples/s and the time left are computed here and nowhere else."""
        rate = (step - first_step) / elapsed_s if elapsed_s > 0 else 0.0  # steps per second in this run
        return cls(phase="train", step=step, total_steps=total_steps, loss=losses["total"], loss_lm=losses["lm"],
                   loss_ul=losses["ul"], loss_ln=losses["ln"], lr=lr, examples_per_s=rate * batch_size,
                   elapsed_s=elapsed_s, eta_s=(total_steps - step) / rate if rate > 0 else 0.0)

    @classmethod
    def event_fields(cls) -> tuple[str, ...]:
        """The fields a worker reports (the progress table's columns), store-assigned ones excluded."""
        return tuple(f.name for f in fields(cls) if f.name not in cls.STORE_FIELDS)

    def with_message(self, message: str) -> "ProgressEvent":
        return replace(self, message=message)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Any) -> "ProgressEvent":
        if not isinstance(data, dict):
            raise UserError("a progress event must be an object")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


Progress = Callable[[ProgressEvent], None]
