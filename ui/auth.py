"""Who may open the app: single-user on 127.0.0.1, signed-in users everywhere else.

Listening on any other address requires authentication against the users stored in SQLite
(argon2 hashes, see storage.users); the app refuses to start without a user unless the
operator passes --insecure-no-auth on purpose.
"""

from __future__ import annotations

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


def make_auth_check(db_factory: Callable[[], object]) -> Callable[[str, str], bool]:
    """The callable Gradio's launch(auth=...) calls with the login form's name and password."""
    from storage import users

    def check(username: str, password: str) -> bool:
        if not username or not password:
            return False
        return users.verify_user(db_factory(), username, password) is not None

    return check
