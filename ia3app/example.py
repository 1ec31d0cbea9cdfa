"""One rendered example: what a template makes of a data row, and what the model sees."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """An input text, its answer choices, and the index of the correct one (None if unlabelled)."""

    input: str
    choices: tuple[str, ...]
    label: int | None = None

    def __post_init__(self) -> None:
        if len(self.choices) < 2:
            raise ValueError("an example needs at least two answer choices")
        if self.label is not None and not 0 <= self.label < len(self.choices):
            raise ValueError(f"label {self.label} out of range for {len(self.choices)} choices")
