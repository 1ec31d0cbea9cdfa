"""Signing in, called directly: the launch policy (who must sign in, when the app refuses to start), anonymous
requests refused, and the header naming the signed-in user."""

from __future__ import annotations

import pytest

from ia3app.errors import UserError
from ui.auth import decide_auth

from ui_calls import Req, ctx, users  # noqa: F401  (the app context and two users)


def test_local_host_needs_no_sign_in():
    assert decide_auth("127.0.0.1", user_count=0).required is False


def test_public_host_refuses_without_users():
    with pytest.raises(UserError, match="storage.users add"):
        decide_auth("0.0.0.0", user_count=0)


def test_public_host_requires_sign_in_when_users_exist():
    assert decide_auth("0.0.0.0", user_count=1).required is True
    assert decide_auth("127.0.0.1", user_count=1, force_auth=True).required is True


def test_insecure_flag_warns():
    policy = decide_auth("0.0.0.0", user_count=0, insecure_no_auth=True)
    assert policy.required is False and "WITHOUT authentication" in policy.warning


def test_main_exits_with_a_message_when_public_and_no_users(tmp_path, capsys, monkeypatch):
    from ui.main import main

    monkeypatch.setenv("IA3APP_DATA_DIR", str(tmp_path / "d"))  # main() exports it; restored afterwards
    with pytest.raises(SystemExit) as exc:
        main(["--host", "0.0.0.0", "--data-dir", str(tmp_path / "d"), "--no-worker"])
    assert exc.value.code == 2
    assert "no users exist" in capsys.readouterr().err


def test_signed_in_mode_rejects_anonymous_requests(ctx, users):
    ctx.auth_required = True
    with pytest.raises(UserError, match="sign in"):
        ctx.user_id(Req())
    assert ctx.user_id(Req("bob")) == users[1]


def test_header_names_the_signed_in_user_with_a_way_out(ctx):
    import gradio as gr

    from ui.app_layout import _account

    with gr.Blocks():
        who, out = gr.Markdown(), gr.Button("Sign out", link="/logout")
    shown = _account(ctx, Req("<b>alice</b>"), who, out)
    assert shown[who] == "Signed in as **&lt;b&gt;alice&lt;/b&gt;**" and shown[out]["visible"] is True
    assert "Single-user mode" in _account(ctx, Req(), who, out)[who]
    ctx.auth_required = True
    assert _account(ctx, Req(), who, out)[out]["visible"] is False
