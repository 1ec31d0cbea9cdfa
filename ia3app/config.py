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


CHOICES = {
    "precision": ("auto", "bf16", "fp32"),
    "compile": ("auto", "on", "off"),
    "activation_checkpointing": ("auto", "on", "off"),
}
"""The settings that take one of a few words (the UI shows them as drop-downs)."""


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class RecipeConfig:
    """T-Few's recipe. Every field is overridable; none needs changing."""

    steps: int = 1000
    """Optimizer steps (T-Few: 1,000 for every task)."""
    batch_size: int = 8
    """Examples per optimizer step (T-Few: 8)."""
    grad_accumulation: int = 0
    """Split each batch into this many micro-batches (0: automatic — 1, or more when the batch
    would not fit in the GPU's free memory)."""
    lr: float = 3e-3
    """Adafactor learning rate (scale_parameter=True, relative_step=False, warmup_init=False)."""
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    """Linear warmup over this fraction of the steps (T-Few: 6 %), then linear decay to 0."""
    warmup_steps: int | None = None
    """An explicit number of warmup steps instead of warmup_ratio (None: use the ratio)."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm."""
    max_length: int = 256
    """Input tokens kept per example (512 for long-input tasks)."""
    unlikelihood: bool = True
    """Add L_UL (unlikelihood on incorrect choices)."""
    length_norm: bool = True
    """Add L_LN (softmax over length-normalised choice scores)."""
    precision: str = "auto"
    """'auto' (frozen base weights in bf16 and bf16 compute on GPUs that support it, fp32 on CPU),
    'bf16' or 'fp32'. The (IA)^3 vectors and the optimizer state are fp32 either way."""
    compile: str = "auto"
    """'auto' (torch.compile each transformer block on CUDA, eager on CPU), 'on' or 'off'."""
    activation_checkpointing: str = "auto"
    """Recompute activations in the backward pass to save memory: 'auto' (only when the batch
    would not fit in the GPU's free memory), 'on' or 'off'."""
    seed: int = 42
    checkpoint_every: int = 100
    """Write a resumable checkpoint every this many steps (0: never)."""
    eval_batch_size: int = 16

    def __post_init__(self) -> None:
        problems = []
        for name in ("steps", "batch_size", "max_length", "eval_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name} must be a positive whole number (got {getattr(self, name)!r})")
        for name in ("grad_accumulation", "checkpoint_every", "seed"):
            if not _whole(getattr(self, name)) or getattr(self, name) < 0:
                problems.append(f"{name} must be a whole number ≥ 0 (got {getattr(self, name)!r})")
        if self.warmup_steps is not None and (not _whole(self.warmup_steps) or self.warmup_steps < 0):
            problems.append(f"warmup_steps must be a whole number ≥ 0, or empty to use warmup_ratio "
                            f"(got {self.warmup_steps!r})")
        if not (_number(self.warmup_ratio) and 0 <= self.warmup_ratio < 1):
            problems.append(f"warmup_ratio must be a fraction of the steps, from 0 up to (not including) 1 "
                            f"(got {self.warmup_ratio!r}; T-Few uses 0.06)")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr <= 1):
            problems.append(f"lr must be in (0, 1] (got {self.lr!r})")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            problems.append(f"weight_decay must be ≥ 0 (got {self.weight_decay!r})")
        if not (isinstance(self.max_grad_norm, (int, float)) and self.max_grad_norm > 0):
            problems.append(f"max_grad_norm must be > 0 (got {self.max_grad_norm!r})")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {', '.join(repr(a) for a in allowed)} (got {getattr(self, name)!r})")
        if _whole(self.batch_size) and _whole(self.grad_accumulation):
            if self.grad_accumulation >= 1 and self.batch_size % self.grad_accumulation:
                problems.append(
                    f"batch_size ({self.batch_size}) must be divisible by grad_accumulation "
                    f"({self.grad_accumulation}): each step splits its batch into that many equal micro-batches"
                )
        if _whole(self.warmup_steps) and _whole(self.steps) and self.warmup_steps > self.steps:
            problems.append(f"warmup_steps ({self.warmup_steps}) exceeds steps ({self.steps}); leave it empty "
                            f"to warm up for warmup_ratio of the steps")
        if problems:
            raise UserError("invalid recipe settings: " + "; ".join(problems))

    def warmup(self) -> int:
        """Warmup steps in effect: warmup_steps if given, else round(warmup_ratio × steps)."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(self.steps, int(round(self.warmup_ratio * self.steps)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RecipeConfig":
        check_keys(cls, data, "recipe setting")
        return cls(**data)
