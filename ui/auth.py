"""Who may open the app: single-user on 127.0.0.1, signed-in users everywhere else.

Listening on any other address requires authentication against the users stored in SQLite
(argon2 hashes, see storage.users); the app refuses to start without a user unless the
operator passes --insecure-no-auth on purpose.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections import OrderedDict, deque
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


MAX_LOGIN_BODY = 16_384
"""Largest sign-in form read (bytes); user names are at most 64 characters (storage.users)."""


def normalise_name(name: str) -> str:
    """A user name as sign-in compares it: Gradio's login strips it, storage.users matches it exactly."""
    return name.strip()


class AttemptLimiter:
    """At most ``max_failures`` failed sign-ins per key in ``window_s``, in bounded memory.

    Keys are stored as 16-byte digests, at most ``max_keys`` of them (the least recently failed leave
    first), each with at most ``max_failures`` times: a flood of unique long names costs at most
    ``max_keys`` small entries, never the names themselves."""

    def __init__(self, max_failures: int = 5, window_s: float = 300.0, max_keys: int = 10_000):
        self.max_failures, self.window_s, self.max_keys = max_failures, window_s, max_keys
        self._failures: OrderedDict[bytes, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _digest(key: str) -> bytes:
        return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        now = time.monotonic()
        digest = self._digest(key)
        with self._lock:
            times = self._failures.get(digest)
            while times and now - times[0] > self.window_s:
                times.popleft()
            if not times:
                self._failures.pop(digest, None)
                return 0.0
            if len(times) < self.max_failures:
                return 0.0
            return self.window_s - (now - times[0])

    def failed(self, key: str) -> None:
        now = time.monotonic()
        digest = self._digest(key)
        with self._lock:
            times = self._failures.pop(digest, None) or deque(maxlen=self.max_failures)
            times.append(now)
            self._failures[digest] = times  # most recent last
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def __len__(self) -> int:
        return len(self._failures)


def make_auth_check(db_factory: Callable[[], object]) -> Callable[[str, str], bool]:
    """The callable Gradio's launch(auth=...) calls with the login form's name and password. Throttling
    is LoginRateLimit's (per name and address), in front of it: a name is never locked for everyone."""
    from storage import users

    def check(username: str, password: str) -> bool:
        if not username or not password:
            return False
        return users.verify_user(db_factory(), normalise_name(username), password) is not None

    return check


def too_many(wait_s: float) -> str:
    return f"too many attempts, try again in {max(1, math.ceil(wait_s))} s"


class LoginRateLimit:
    """ASGI middleware in front of every sign-in route (POST …/login and …/login/): failed sign-ins are
    counted per (user name, client address) — 5 in 5 minutes — and per address — 20 in 5 minutes; over
    either, the attempt gets 429 "too many attempts, try again in N s" before its password is checked.
    Someone else failing on your name from their address never locks you out.

    The client address is the connection's peer: uvicorn reads X-Forwarded-For only from the proxies
    the operator names (--trusted-proxy, see :func:`trust_proxies`)."""

    def __init__(self, app: Callable, per_name: AttemptLimiter | None = None,
                 per_address: AttemptLimiter | None = None):
        self.app = app
        self.per_name = per_name or AttemptLimiter(max_failures=5, window_s=300.0)
        self.per_address = per_address or AttemptLimiter(max_failures=20, window_s=300.0)

    @staticmethod
    def is_login(scope: dict) -> bool:
        path = scope.get("path", "").rstrip("/")
        return scope.get("type") == "http" and scope.get("method") == "POST" and path.endswith("/login")

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") == "http" and scope.get("method") == "GET" and scope.get("path") == "/":
            await self.app(scope, receive, _with_login_notice(send))
            return
        if not self.is_login(scope):
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_LOGIN_BODY:
                await _answer(send, 413, f"the sign-in form is over {MAX_LOGIN_BODY:,} bytes; user names are "
                                         "at most 64 characters")
                return
            if not message.get("more_body"):
                break
        name = normalise_name(await _form_username(scope, bytes(body)))
        address = (scope.get("client") or ("?",))[0]
        keys = (f"name:{address}:{name}", f"addr:{address}")
        wait = max(self.per_name.retry_after(keys[0]), self.per_address.retry_after(keys[1]))
        if wait > 0:
            await _answer(send, 429, too_many(wait), {"retry-after": str(max(1, math.ceil(wait)))})
            return

        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        async def watch(message: dict) -> None:
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                self.per_name.failed(keys[0])
                self.per_address.failed(keys[1])
            await send(message)

        await self.app(scope, replay, watch)


LOGIN_NOTICE = b"""<script>
/* ia3app: Gradio's sign-in form says nothing when a sign-in is refused for too many attempts (429);
   show the server's words ("too many attempts, try again in N s") above the form instead. */
(() => {
  const plain = window.fetch.bind(window);
  window.fetch = async (...args) => {
    const response = await plain(...args);
    const url = String(args[0] && args[0].url || args[0]);
    if (response.status === 429 && /\/login\/?$/.test(url)) {
      let words = "too many attempts; try again later";
      try { words = (await response.clone().json()).detail || words; } catch (e) {}
      let box = document.getElementById("ia3-login-notice");
      if (!box) {
        box = document.createElement("div");
        box.id = "ia3-login-notice";
        box.setAttribute("role", "alert");
        box.style.cssText = "position:fixed;top:16px;left:50%;transform:translateX(-50%);z-index:1000;" +
          "background:#fee2e2;color:#991b1b;border:1px solid #fca5a5;border-radius:8px;padding:10px 16px;" +
          "font:600 15px system-ui,sans-serif";
        document.body.appendChild(box);
      }
      box.textContent = words;
    }
    return response;
  };
})();
</script>"""


def _with_login_notice(send: Callable) -> Callable:
    """``send`` that puts LOGIN_NOTICE into an HTML page's head (the app's page, where sign-in happens)."""
    start: dict | None = None
    chunks: list[bytes] = []

    async def patched(message: dict) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers") or [])
            if not headers.get(b"content-type", b"").startswith(b"text/html") or b"content-encoding" in headers:
                await send(message)
                return
            start = message
            return
        if start is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        page = b"".join(chunks).replace(b"</head>", LOGIN_NOTICE + b"</head>", 1)
        headers = [(k, v) for k, v in start.get("headers") or [] if k != b"content-length"]
        await send({**start, "headers": headers + [(b"content-length", str(len(page)).encode())]})
        await send({"type": "http.response.body", "body": page})

    return patched


async def _form_username(scope: dict, body: bytes) -> str:
    """The form's username (urlencoded or multipart, as Gradio's login page sends it); '' when none."""
    from starlette.exceptions import HTTPException
    from starlette.requests import Request

    async def once() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(scope, once).form(max_files=0, max_fields=10)
    except (HTTPException, ValueError):  # malformed: Gradio answers it (4xx), counted as a failure under no name
        return ""
    value = form.get("username")
    return value if isinstance(value, str) else ""


async def _answer(send: Callable, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json")] + [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def trust_proxies(addresses: list[str]) -> str:
    """Make uvicorn read X-Forwarded-For only from these addresses (networks allowed): by default it
    trusts 127.0.0.1, so anything on this machine could claim any address. Returns what it set."""
    value = ",".join(addresses)
    os.environ["FORWARDED_ALLOW_IPS"] = value  # "" trusts nobody
    return value


def session_user_id(ctx, scope: dict) -> int | None:
    """The id of the user a request to the Gradio app comes from (its sign-in cookie, as Gradio reads
    it); the single local user without sign-in; None when nobody is signed in. Touches SQLite: call it
    in a worker thread."""
    from starlette.requests import Request

    from storage import users

    if not ctx.auth_required:
        return ctx.user_id(None)
    app = scope.get("app")
    cookies = Request(scope).cookies
    cookie_id = getattr(app, "cookie_id", None)
    token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
    name = getattr(app, "tokens", {}).get(token) if token else None
    return users.user_id(ctx.db(), name) if name else None
