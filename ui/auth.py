"""Who may open the app: single-user on 127.0.0.1, signed-in users everywhere else.

Listening on any other address requires authentication against the users stored in SQLite
(argon2 hashes, see storage.users); the app refuses to start without a user unless the
operator passes --insecure-no-auth on purpose.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

from ia3app.errors import UserError

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class AuthPolicy:
    """How one launch authenticates."""

    required: bool
    """True: Gradio's login page, checked against storage.users."""
    warning: str | None = None
    """Printed at start-up when the operator chose something risky."""


def decide_auth(host: str, *, user_count: int, insecure_no_auth: bool = False, force_auth: bool = False) -> AuthPolicy:
    """Pick the policy for a launch, or raise UserError explaining how to start safely."""
    local = host in LOCAL_HOSTS
    if insecure_no_auth:
        if local:
            return AuthPolicy(required=False)
        return AuthPolicy(
            required=False,
            warning=f"WARNING: listening on {host} WITHOUT authentication (--insecure-no-auth): "
            "anyone who can reach this port can use the app as the single 'local' user.",
        )
    if not local or force_auth:
        if user_count == 0:
            where = f"listening on {host}" if not local else "--auth"
            raise UserError(
                f"{where} requires signing in, but no users exist yet. Add one with "
                "`python -m storage.users add NAME` (it asks for the password), then start again; "
                "or run on 127.0.0.1 (the default) for single-user use"
            )
        return AuthPolicy(required=True)
    return AuthPolicy(required=False)


class AttemptLimiter:
    """At most ``max_failures`` failed sign-ins per key (a user name, an address) in ``window_s``."""

    def __init__(self, max_failures: int = 5, window_s: float = 300.0):
        self.max_failures, self.window_s = max_failures, window_s
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures[key]
        while times and now - times[0] > self.window_s:
            times.popleft()
        return times

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(key, now)
            if len(times) < self.max_failures:
                if not times:
                    self._failures.pop(key, None)
                return 0.0
            return self.window_s - (now - times[0])

    def failed(self, key: str) -> None:
        with self._lock:
            self._recent(key, time.monotonic()).append(time.monotonic())


def make_auth_check(db_factory: Callable[[], object], limiter: AttemptLimiter | None = None) -> Callable[[str, str], bool]:
    """The callable Gradio's launch(auth=...) calls with the login form's name and password. After 5
    failures for one user name in 5 minutes, that name is refused (without checking) until the window passes."""
    from storage import users

    limiter = limiter or AttemptLimiter()

    def check(username: str, password: str) -> bool:
        if not username or not password:
            return False
        key = f"user:{username.strip().casefold()}"
        if limiter.retry_after(key) > 0:
            return False
        ok = users.verify_user(db_factory(), username, password) is not None
        if not ok:
            limiter.failed(key)
        return ok

    return check


class LoginRateLimit:
    """ASGI middleware: failed sign-ins (POST …/login answered 4xx) counted per client address; an
    address over the limit gets 429 with the wait, before its password is checked at all."""

    def __init__(self, app: Callable, limiter: AttemptLimiter | None = None):
        self.app = app
        self.limiter = limiter or AttemptLimiter(max_failures=20, window_s=300.0)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST" or not scope.get("path", "").endswith("/login"):
            await self.app(scope, receive, send)
            return
        key = f"addr:{(scope.get('client') or ('?',))[0]}"
        wait = self.limiter.retry_after(key)
        if wait > 0:
            body = (f'{{"detail": "too many failed sign-ins from your address; try again in {wait / 60:.0f} '
                    f'minute(s)"}}').encode()
            await send({"type": "http.response.start", "status": 429,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", str(int(wait)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return

        async def watch(message: dict) -> None:
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                self.limiter.failed(key)
            await send(message)

        await self.app(scope, receive, watch)
