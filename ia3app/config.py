"""The recipe's settings as one documented dataclass (T-Few defaults; see docs/TFEW.md).

The CLI, the web UI and the job worker all build this same object; none passes loose dicts
of strings. Every problem is collected and raised once, as a UserError.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable

from ia3app.errors import UserError


def check_keys(cls, data: dict[str, Any], what: str, required: Iterable[str] = ()) -> None:
    """UserError for keys of `data` that `cls` (a dataclass) lacks, or required keys missing.

    `what` names the thing for the message: "unknown {what}(s): ...", e.g. "recipe setting".
    """
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"unknown {what}(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    missing = [k for k in required if k not in data]
    if missing:
        owner = what.split()[0]
        raise UserError(f"{owner} is missing {', '.join(repr(m) for m in missing)}")


@dataclass
class RecipeConfig:
    """T-Few's recipe. Every field is overridable; none needs changing."""

    steps: int = 1000
    """Optimizer steps (T-Few: 1,000 for every task)."""
    batch_size: int = 8
    """Examples per optimizer step (T-Few: 8)."""
    grad_accumulation: int = 1
    """Split each batch into this many micro-batches when it does not fit in memory."""
    lr: float = 3e-3
    """Adafactor learning rate (scale_parameter=True, relative_step=False, warmup_init=False)."""
    weight_decay: float = 0.0
    warmup_steps: int = 60
    """Linear warmup (6% of 1,000), then linear decay to 0 at the last step."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm."""
    max_length: int = 256
    """Input tokens kept per example (512 for long-input tasks)."""
    unlikelihood: bool = True
    """Add L_UL (unlikelihood on incorrect choices)."""
    length_norm: bool = True
    """Add L_LN (softmax over length-normalised choice scores)."""
    precision: str = "auto"
    """'auto' (bf16 autocast on GPUs that support it, fp32 on CPU), 'bf16' or 'fp32'."""
    seed: int = 42
    checkpoint_every: int = 100
    """Write a resumable checkpoint every this many steps (0: never)."""
    eval_batch_size: int = 16

    def __post_init__(self) -> None:
        problems = []
        for name in ("steps", "batch_size", "grad_accumulation", "max_length", "eval_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name} must be a positive whole number (got {getattr(self, name)!r})")
        for name in ("warmup_steps", "checkpoint_every", "seed"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                problems.append(f"{name} must be a whole number ≥ 0 (got {getattr(self, name)!r})")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr <= 1):
            problems.append(f"lr must be in (0, 1] (got {self.lr!r})")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            problems.append(f"weight_decay must be ≥ 0 (got {self.weight_decay!r})")
        if not (isinstance(self.max_grad_norm, (int, float)) and self.max_grad_norm > 0):
            problems.append(f"max_grad_norm must be > 0 (got {self.max_grad_norm!r})")
        if self.precision not in ("auto", "bf16", "fp32"):
            problems.append(f"precision must be 'auto', 'bf16' or 'fp32' (got {self.precision!r})")
        if isinstance(self.batch_size, int) and isinstance(self.grad_accumulation, int):
            if self.grad_accumulation >= 1 and self.batch_size % self.grad_accumulation:
                problems.append(
                    f"batch_size ({self.batch_size}) must be divisible by grad_accumulation "
                    f"({self.grad_accumulation})"
                )
        if isinstance(self.warmup_steps, int) and isinstance(self.steps, int) and self.warmup_steps > self.steps:
            problems.append(f"warmup_steps ({self.warmup_steps}) exceeds steps ({self.steps})")
        if problems:
            raise UserError("invalid recipe settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RecipeConfig":
        check_keys(cls, data, "recipe setting")
        return cls(**data)
