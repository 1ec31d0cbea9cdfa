"""Lazy public faces for ia3app's packages (PEP 562).

Each package's ``__init__`` lists the names it offers and the module that defines each one; the
module is imported on first use. So ``import ia3app.templates`` costs no torch import, and a
package's face never forms an import circle with its own modules.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(__getattr__, __dir__) for ``package``: ``names`` maps a public name to its module (relative)."""

    def getattr_(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def dir_() -> list[str]:
        return sorted(names)

    return getattr_, dir_
