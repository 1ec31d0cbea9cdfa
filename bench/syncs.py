"""Counting host synchronisations: on a GPU with torch's sync debug mode, on a CPU by op.

:class:`DeviceReads` (any device) counts the ops that make the host wait for a GPU: reading a
value (``.item()``, ``int()``, ``bool()``, ``if tensor``: ``aten._local_scalar_dense``) and ops whose
output shape depends on the data (``nonzero``, ``masked_select``), plus ``equal`` /
``is_nonzero``. It sees ops, so it also works on a CPU, where nothing actually waits (it does not
see ``.tolist()`` / ``.cpu()`` copies, which are no ops on a CPU).

:func:`cuda_syncs` counts what the CUDA runtime itself reports with
``torch.cuda.set_sync_debug_mode("warn")``: every synchronising call, copies included.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_OPS = (
    torch.ops.aten._local_scalar_dense.default,
    torch.ops.aten.nonzero.default,
    torch.ops.aten.masked_select.default,
    torch.ops.aten.equal.default,
    torch.ops.aten.is_nonzero.default,
)


class DeviceReads(TorchDispatchMode):
    """Within the block, count ops that read device values back to the host."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self._packets = {op.overloadpacket for op in SYNC_OPS}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if getattr(func, "overloadpacket", None) in self._packets:
            self.count += 1
        return func(*args, **(kwargs or {}))


class _Count:
    count = 0


@contextmanager
def cuda_syncs() -> Iterator[_Count]:
    """Count synchronising CUDA calls made within the block (torch's sync debug mode)."""
    counter = _Count()
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield counter
        finally:
            torch.cuda.set_sync_debug_mode(previous)
            counter.count = sum("synchroniz" in str(w.message) for w in caught)
