"""How few parameters (IA)^3 trains: counts and bytes, computable without allocating weights.

Works on models built on the meta device (``with torch.device("meta"): Model(config)``), so
the report for a 3B or 11B model needs neither its download nor its memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ia3app.adapters.files import vectors_to_bytes
from ia3app.adapters.ia3 import Ia3Model, is_ia3_parameter


@dataclass(frozen=True)
class ParamReport:
    """Parameter counts of an adapted model.

    base: parameters of the base model (shared/tied tensors counted once).
    added: (IA)^3 parameters (the vectors; the only ones that train).
    fraction: added / base.
    adapter_bytes: size of adapter.safetensors holding the vectors (fp32 + header).
    """

    base: int
    added: int
    fraction: float
    adapter_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.added:,} trained parameters ({self.fraction:.4%} of the base model's "
            f"{self.base:,}); adapter file {self.adapter_bytes / 1e6:.2f} MB"
        )


def _model(model_or_handle: nn.Module | Ia3Model) -> nn.Module:
    return model_or_handle.model if isinstance(model_or_handle, Ia3Model) else model_or_handle


def parameter_report(model_or_handle: nn.Module | Ia3Model) -> ParamReport:
    """Count base and (IA)^3 parameters; ``is_ia3_parameter`` decides which is which.

    With a handle the vectors come from its layers, so a merged handle reports the same.
    """
    model = _model(model_or_handle)
    base, vectors = 0, {}
    for name, param in model.named_parameters():  # removes duplicates: tied weights count once
        if is_ia3_parameter(name):
            vectors[name] = torch.zeros(param.shape)  # real (CPU) stand-in: only the size matters
        else:
            base += param.numel()
    if isinstance(model_or_handle, Ia3Model):  # merged layers are out of the module tree: ask the handle
        vectors = {name: torch.zeros(n) for name, n in model_or_handle.shapes().items()}
    added = sum(v.numel() for v in vectors.values())
    return ParamReport(
        base=base,
        added=added,
        fraction=added / base if base else 0.0,
        adapter_bytes=len(vectors_to_bytes(vectors)) if vectors else 0,
    )


def full_model_bytes(model_or_handle: nn.Module | Ia3Model, dtype: torch.dtype | None = None) -> int:
    """Bytes of the base model's parameters (as stored, or as if in ``dtype``): a full copy's size."""
    model = _model(model_or_handle)
    total = 0
    for name, param in model.named_parameters():
        if not is_ia3_parameter(name):
            itemsize = dtype.itemsize if dtype is not None else param.element_size()
            total += param.numel() * itemsize
    return total
