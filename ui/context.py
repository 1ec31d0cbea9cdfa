"""What every page handler needs: where the data lives, the limits, and who is asking.

Job and dataset state live in the database, never here: this object holds only settings and
per-thread SQLite connections, so a page reload or an app restart loses nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ia3app.errors import UserError

if TYPE_CHECKING:
    from ia3app.serving.interface import Serving



@dataclass
class AppContext:
    """Settings of one running web app."""

    data_dir: Path
    """Root of the data directory (database, uploads, adapters, models)."""
    max_upload_bytes: int = 5_000_000
    """Largest CSV accepted from a browser."""
    max_rows: int = 10_000
    """Most data rows accepted in one CSV."""
    api_max_rows: int = 1_000
    """Most rows in one POST /v1/predict (--api-max-rows; more is refused with 413)."""
    api_max_render_s: float = 10.0
    """CPU seconds one POST /v1/predict's rows may spend rendering in all (--api-max-render-s; 422 past it)."""
    auth_required: bool = False
    """True when users must sign in; False for the single-user 127.0.0.1 mode (user 'local')."""
    _local: threading.local = field(default_factory=threading.local, repr=False)
    _local_id: int | None = field(default=None, repr=False)
    serving: dict[str, Any] = field(default_factory=dict)
    """ia3app.serving.engine.ServingConfig fields for the prediction engine (batch wait, rows, adapter budget)."""
    ray_address: str | None = None
    """With the Ray backend on ('auto' or HOST:PORT), predictions are answered by the Ray Serve
    replicas (jobs.ray_serve.RayServing) instead of an engine in this process."""
    ray_serve_replicas: int = 1
    """Replicas of the Ray Serve app when this app deploys it (the first prediction with --ray)."""
    model_dirs: list[Path] = field(default_factory=list)
    """Folders whose models users may pick by path (--model-dir, repeatable)."""
    trusted_proxies: list[str] = field(default_factory=list)
    """Addresses (or networks) whose X-Forwarded-For names the client (--trusted-proxy); none by default."""
    _db_ident: tuple[int, int] | None = field(default=None, repr=False)
    """(device, inode) of the database file this process opened: a missing or other file is a fault."""
    _engine: Any = field(default=None, repr=False)
    _engine_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        from storage.db import make_private_dir

        self.data_dir = Path(self.data_dir).resolve()
        make_private_dir(self.data_dir)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "ia3app.db"

    def db(self):
        """A SQLite connection for the calling thread (Gradio runs handlers on a thread pool)."""
        from storage.db import file_identity, open_db, replaced_database, vanished_database

        conn = getattr(self._local, "db", None)
        ident = file_identity(self.db_path)
        if ident is None and (conn is not None or self._db_ident is not None):  # deleted: never recreate it
            raise vanished_database(self.db_path)
        if self._db_ident is not None and ident != self._db_ident:
            # replaced (a restored backup): this process's write-ahead log belongs to the old file
            raise replaced_database(self.db_path)
        if conn is None:
            conn = self._local.db = open_db(self.db_path)
            if self._db_ident is None:
                self._db_ident = file_identity(self.db_path)
        return conn

    def allowed_model_dirs(self) -> list[Path] | None:
        """Where local model folders may be: anywhere for the single local user without --model-dir,
        else only inside the --model-dir folders (none: the option is hidden)."""
        if self.model_dirs or self.auth_required:
            return [Path(d).resolve() for d in self.model_dirs]
        return None

    def files(self):
        from storage.files import FileStore

        return FileStore(self.data_dir)

    def engine(self) -> "Serving":
        """The app's one prediction engine (ia3app.serving.interface.Serving: the local ServingEngine, or the
        RayServing client when the Ray backend is on): live, batch-CSV, /predict and the JSON API.

        Created on first use, so the web process imports torch only when someone predicts.
        """
        with self._engine_lock:
            if self._engine is None and self.ray_address:
                from jobs.ray_serve import RayServing

                self._engine = RayServing(self.ray_address, replicas=self.ray_serve_replicas, serving=self.serving)
            elif self._engine is None:
                from ia3app.serving.engine import ServingEngine

                self._engine = ServingEngine(**self.serving)
            return self._engine

    def user_id(self, request: Any) -> int:
        """The id of the person making this request.

        Signed-in mode: the name Gradio's login recorded. Single-user mode: the 'local' user.
        A request without a signed-in user in signed-in mode gets nothing.
        """
        from storage import users

        name = getattr(request, "username", None) if request is not None else None
        if name:
            uid = users.user_id(self.db(), name)
            if uid is None:
                raise UserError("your account no longer exists; sign in again")
            return uid
        if self.auth_required:
            raise UserError("please sign in first")
        if self._local_id is None:
            self._local_id = users.ensure_local_user(self.db())
        return self._local_id
