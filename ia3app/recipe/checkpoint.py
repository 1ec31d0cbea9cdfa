"""Resumable training checkpoints: written atomically, read back with ``weights_only=True``.

One file, ``<checkpoint_dir>/checkpoint.pt``, holds everything needed to continue exactly where
training stopped: the (IA)^3 vectors, the optimizer and scheduler states, the RNG states (torch's
global one, CUDA's, and the sampler's generator), the step, and the loss history. It is written to
a temporary file in the same folder and moved into place with ``os.replace``, so a crash
mid-write leaves the previous checkpoint intact.

These files are our own; ``torch.load`` still runs with ``weights_only=True`` (tensors, numbers,
strings, lists and dicts only: no unpickling of arbitrary objects).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ia3app.errors import UserError

FILENAME = "checkpoint.pt"
FORMAT_VERSION = 1
# Recipe settings that must match for a resume to continue the same run.
RESUME_KEYS = ("steps", "batch_size", "lr", "weight_decay", "seed", "unlikelihood", "length_norm")


def _warmup(recipe: dict[str, Any]) -> int | None:
    """Warmup steps in effect for a saved recipe dict (older checkpoints have no warmup_ratio)."""
    if recipe.get("warmup_steps") is not None:
        return recipe["warmup_steps"]
    if recipe.get("warmup_ratio") is None or recipe.get("steps") is None:
        return None
    return min(recipe["steps"], int(round(recipe["warmup_ratio"] * recipe["steps"])))


@dataclass
class TrainState:
    """What a checkpoint holds."""

    step: int
    vectors: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    sampler: dict[str, Any]
    torch_rng: torch.Tensor
    cuda_rng: list[torch.Tensor] | None
    history: list[dict[str, float]]
    tokens_processed: int
    recipe: dict[str, Any]
    num_examples: int


def checkpoint_path(checkpoint_dir: str | Path) -> Path:
    return Path(checkpoint_dir) / FILENAME


def has_checkpoint(checkpoint_dir: str | Path | None) -> bool:
    return checkpoint_dir is not None and checkpoint_path(checkpoint_dir).is_file()


def capture_rng() -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """torch's global RNG state and, with a GPU, every CUDA device's."""
    return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def restore_rng(state: TrainState) -> None:
    torch.set_rng_state(state.torch_rng)
    if state.cuda_rng is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state.cuda_rng)


def save_checkpoint(checkpoint_dir: str | Path, state: TrainState) -> Path:
    """Write atomically: a temporary file in the same folder, then os.replace."""
    folder = Path(checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT_VERSION, **state.__dict__}
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, checkpoint_path(folder))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return checkpoint_path(folder)


def load_checkpoint(checkpoint_dir: str | Path) -> TrainState:
    """Read a checkpoint written by save_checkpoint (weights_only: no arbitrary unpickling)."""
    path = checkpoint_path(checkpoint_dir)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError) as exc:
        raise UserError(f"the training checkpoint {path} cannot be read ({exc}); delete it to start over") from exc
    if not isinstance(payload, dict) or payload.pop("format", None) != FORMAT_VERSION:
        raise UserError(f"{path} is not a checkpoint of this version of ia3app; delete it to start over")
    return TrainState(**payload)


def check_compatible(state: TrainState, recipe: dict[str, Any], num_examples: int, checkpoint_dir) -> None:
    """A resume must continue the same run: same key settings and the same number of examples."""
    changed = [f"{k} {state.recipe.get(k)!r} → {recipe.get(k)!r}" for k in RESUME_KEYS if state.recipe.get(k) != recipe.get(k)]
    if _warmup(state.recipe) != _warmup(recipe):
        changed.append(f"warmup steps {_warmup(state.recipe)!r} → {_warmup(recipe)!r}")
    if state.num_examples != num_examples:
        changed.append(f"training examples {state.num_examples} → {num_examples}")
    if changed:
        raise UserError(
            f"the checkpoint in {checkpoint_dir} belongs to a run with other settings ({'; '.join(changed)}); "
            "use the same settings to resume, or delete the checkpoint to start over"
        )
