"""Command-line entry of the web app: parse flags, decide authentication, start the worker, launch."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ia3app.errors import UserError
from ui.auth import decide_auth, make_auth_check
from ui.context import AppContext


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="app.py",
        description="ia3app web app: adapt a language model to your task with a handful of labelled examples "
        "(T-Few / (IA)³). Single-user on 127.0.0.1 by default; any other --host requires signing in.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: only this machine)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--data-dir", default=None,
                   help="database, uploads and adapters (default: $IA3APP_DATA_DIR or ./data)")
    p.add_argument("--no-worker", action="store_true",
                   help="do not start a local training worker "
                   "(run `python -m jobs.worker` yourself, e.g. on a GPU host)")
    p.add_argument("--auth", action="store_true", help="require signing in even on 127.0.0.1")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="allow listening on a non-local address without authentication (everyone is user 'local')")
    p.add_argument("--max-upload-mb", type=float, default=5.0, help="largest CSV accepted (MB, default 5)")
    p.add_argument("--max-rows", type=int, default=10_000, help="most rows accepted in one CSV (default 10000)")
    return p.parse_args(argv)


def resolve_data_dir(flag: str | None) -> Path:
    """--data-dir wins, then $IA3APP_DATA_DIR, then ./data; exported so the worker agrees."""
    path = Path(flag or os.environ.get("IA3APP_DATA_DIR") or "data").resolve()
    os.environ["IA3APP_DATA_DIR"] = str(path)
    return path


def prepare(args: argparse.Namespace) -> tuple[AppContext, object | None, str | None]:
    """Everything before launching: context, auth callable (or None), a warning to print."""
    from storage import users

    data_dir = resolve_data_dir(args.data_dir)
    ctx = AppContext(data_dir, max_upload_bytes=int(args.max_upload_mb * 1_000_000), max_rows=args.max_rows)
    policy = decide_auth(args.host, user_count=users.count_login_users(ctx.db()),
                         insecure_no_auth=args.insecure_no_auth, force_auth=args.auth)
    ctx.auth_required = policy.required
    auth = make_auth_check(ctx.db) if policy.required else None
    return ctx, auth, policy.warning


def launch(ctx: AppContext, *, host: str = "127.0.0.1", port: int | None = None, auth=None,
           prevent_thread_lock: bool = False, quiet: bool = False):
    """Build the Blocks and launch them; returns (demo, local_url)."""
    from ui.blocks import CSS, THEME, build_app

    demo = build_app(ctx)
    demo.queue(default_concurrency_limit=4)
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        auth_message="Sign in with the account your administrator created (python -m storage.users add NAME).",
        max_file_size=ctx.max_upload_bytes * 2,  # the CSV checker states the exact limit; this stops abuse early
        blocked_paths=[str(ctx.data_dir)],  # stored data leaves only through handlers that check the owner
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        theme=THEME,
        css=CSS,
        footer_links=["api"],
        ssr_mode=False,
    )
    return demo, url


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        ctx, auth, warning = prepare(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    if warning:
        print(warning, file=sys.stderr)
    worker = None
    if not args.no_worker:
        from jobs.local import start_local_worker

        worker = start_local_worker(ctx.data_dir)
    try:
        launch(ctx, host=args.host, port=args.port, auth=auth)
    finally:
        if worker is not None:
            worker.stop()
