"""ia3app: the T-Few recipe ((IA)^3 adapters on T0-style models) as a library and CLI.

The ML core knows nothing of the web UI, SQLite or the job queue.
"""

__version__ = "0.1.0"

from ia3app.errors import UserError  # noqa: E402

__all__ = ["UserError", "__version__"]
