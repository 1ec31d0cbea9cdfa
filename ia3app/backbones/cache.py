"""Keep the loaded backbone (with its (IA)^3 layers, compiled blocks) for the next job of the same model.

A worker runs job after job, often on the same base model. Loading T0-3B takes seconds to
minutes and compiling its blocks more; both are paid once per worker with this cache. Between
jobs the handle is put back to the base model's exact function: merged weights restored
bit-for-bit, vectors reset to ones, the mixed-batch bank emptied. One model is kept at a time:
a job for another model drops the kept one before loading (no two backbones in memory).
"""

from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger(__name__)


class ModelCache:
    """At most one (LoadedModel, Ia3Model handle), keyed by what was loaded and how."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.loaded = None
        self.handle = None
        self.hits = 0

    def get(self, key: tuple, load: Callable[[], tuple]) -> tuple:
        """(loaded, handle) for `key`; load() -> (loaded, handle) runs only on a miss."""
        if self.key == key and self.handle is not None:
            self.hits += 1
            self._reset()
            log.info("reusing the loaded %s", key[0])
            return self.loaded, self.handle
        self.clear()
        self.loaded, self.handle = load()
        self.key = key
        return self.loaded, self.handle

    def _reset(self) -> None:
        handle = self.handle
        handle.restore()
        handle.reset()
        for name in handle.adapter_names:
            handle.remove_adapter(name)
        handle.model.eval()

    def clear(self) -> None:
        """Drop the kept model (after a failure that may have left it half-changed, or for another model)."""
        self.key = self.loaded = self.handle = None
