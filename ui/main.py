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
    p.add_argument("--ray", default=os.environ.get("IA3APP_RAY") or None, metavar="auto|ADDRESS",
                   help="run jobs (and serve predictions) on a Ray cluster instead of a local worker: 'auto' joins "
                   "the cluster `ray start --head` began on this machine, or give the head's HOST:PORT "
                   "(default: $IA3APP_RAY; unset: local worker)")
    p.add_argument("--ray-serve-replicas", type=int, default=1,
                   help="with --ray: replicas of the serving engine on the cluster (one GPU each where there are GPUs)")
    p.add_argument("--model-dir", action="append", default=[], metavar="DIR",
                   help="a folder whose models users may pick by path (repeatable); without it the path field is "
                   "hidden when users sign in, and open to any folder for the single local user")
    p.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDRESS",
                   help="a reverse proxy's address or network (repeatable) whose X-Forwarded-For header names the "
                   "client, for sign-in limits per address; without it the header is ignored from everyone")
    p.add_argument("--auth", action="store_true", help="require signing in even on 127.0.0.1")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="allow listening on a non-local address without authentication (everyone is user 'local')")
    p.add_argument("--max-upload-mb", type=float, default=5.0, help="largest CSV accepted (MB, default 5)")
    p.add_argument("--max-rows", type=int, default=10_000, help="most rows accepted in one CSV (default 10000)")
    p.add_argument("--api-max-rows", type=int, default=1_000,
                   help="most rows in one POST /v1/predict (default 1000; more is refused with 413)")
    p.add_argument("--api-max-render-s", type=float, default=10.0,
                   help="CPU seconds one POST /v1/predict's rows may spend rendering the template in all "
                   "(default 10; past it the request is refused with 422)")
    p.add_argument("--serve-only", action="store_true",
                   help="a predictions-only server: the JSON API (POST /v1/predict with an API key) without the "
                   "pages or a training worker, for a machine that only serves")
    p.add_argument("--serve-device", default=None, help="device for predictions (default: cuda if available)")
    p.add_argument("--serve-max-wait-ms", type=float, default=3.0,
                   help="how long the prediction batcher waits for more requests under concurrent traffic (ms)")
    p.add_argument("--serve-batch-rows", type=int, default=32, help="most rows in one prediction forward pass")
    p.add_argument("--adapter-budget-mb", type=float, default=1024.0,
                   help="memory for adapters resident beside each base model (MB; least recently used leave first)")
    return p.parse_args(argv)


def resolve_data_dir(flag: str | None) -> Path:
    """--data-dir wins, then $IA3APP_DATA_DIR, then ./data; exported so the worker agrees."""
    path = Path(flag or os.environ.get("IA3APP_DATA_DIR") or "data").resolve()
    os.environ["IA3APP_DATA_DIR"] = str(path)
    return path


def prepare(args: argparse.Namespace) -> tuple[AppContext, object | None, str | None]:
    """Everything before launching: context, auth callable (or None), a warning to print."""
    from storage import users

    from storage.db import check_database

    data_dir = resolve_data_dir(args.data_dir)
    check_database(data_dir)  # a damaged database stops the start with the steps to recover it
    serving = {"device": args.serve_device, "max_wait_ms": args.serve_max_wait_ms,
               "max_batch_rows": args.serve_batch_rows, "adapter_budget_mb": args.adapter_budget_mb}
    if args.api_max_rows < 1 or args.api_max_render_s <= 0:
        raise UserError("--api-max-rows must be at least 1 and --api-max-render-s above 0")
    ctx = AppContext(data_dir, max_upload_bytes=int(args.max_upload_mb * 1_000_000), max_rows=args.max_rows,
                     api_max_rows=args.api_max_rows, api_max_render_s=args.api_max_render_s, serving=serving,
                     ray_address=args.ray, ray_serve_replicas=args.ray_serve_replicas,
                     model_dirs=[Path(d) for d in args.model_dir], trusted_proxies=list(args.trusted_proxy))
    policy = decide_auth(args.host, user_count=users.count_login_users(ctx.db()),
                         insecure_no_auth=args.insecure_no_auth, force_auth=args.auth)
    ctx.auth_required = policy.required
    auth = make_auth_check(ctx.db) if policy.required else None
    return ctx, auth, policy.warning


def launch(ctx: AppContext, *, host: str = "127.0.0.1", port: int | None = None, auth=None,
           prevent_thread_lock: bool = False, quiet: bool = False):
    """Build the Blocks and launch them, with the JSON API's routes in front; returns (demo, local_url)."""
    from ui.app_layout import CSS, THEME, build_app
    from ui.http_api import add_routes

    from starlette.middleware import Middleware

    from ui.auth import LoginRateLimit, session_user_id, trust_proxies

    from ui.faults import name_storage_faults
    from ui.tempfiles import DOWNLOADS, GRADIO_CACHE, DownloadGuard, use_data_dir

    # a thread rendering or tokenizing a request's rows hands the interpreter back to the event loop every
    # 1 ms (Python's default is 5 ms): other users' page loads wait less behind one heavy request
    sys.setswitchinterval(0.001)
    use_data_dir(ctx.data_dir)  # Gradio's cache (uploads, copies of downloads) owner-only, in the data dir
    # transformers' lazy module is not safe to import from two threads at once: the estimate (tokenizing the
    # user's rows) and the tiny model's builder, each in a Gradio worker thread, raced into "cannot import
    # name 'BartConfig' from 'transformers'". Import what the pages use once, here, before any thread runs.
    import ia3app.backbones.tiny  # noqa: F401  (transformers' model classes)
    from transformers import AutoConfig, AutoTokenizer  # noqa: F401
    demo = build_app(ctx)
    name_storage_faults(demo, ctx.data_dir)  # a database or disk fault says so, in words
    demo.queue(default_concurrency_limit=4)
    trust_proxies(ctx.trusted_proxies)  # uvicorn reads X-Forwarded-For only from these (default: nobody)
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=False,  # never a public link, whatever GRADIO_SHARE says
        auth=auth,
        # failed sign-ins per (name, address) and per address on every login route; no schema without sign-in
        app_kwargs={"middleware": [Middleware(LoginRateLimit),
                                   Middleware(DownloadGuard, data_dir=ctx.data_dir,
                                              user_of=lambda scope: session_user_id(ctx, scope))],
                    **({"openapi_url": None} if ctx.auth_required else {})},
        auth_message="Sign in with the account your administrator created (python -m storage.users add NAME).",
        max_file_size=ctx.max_upload_bytes * 2,  # the CSV checker states the exact limit; this stops abuse early
        # stored data leaves only through handlers that check the owner; DownloadGuard blocks the rest too
        # (not the downloads folder: Gradio copies a download from there into its cache, which DownloadGuard
        # serves only to the download's owner; blocking it refused every adapter zip and prediction CSV)
        blocked_paths=[str(p) for p in ctx.data_dir.iterdir() if p.name not in (GRADIO_CACHE, DOWNLOADS)],
        prevent_thread_lock=True,  # the API routes go in before anyone is told the address
        quiet=quiet,
        theme=THEME,
        css=CSS,
        footer_links=["api"],
        ssr_mode=False,
    )
    add_routes(demo.app, ctx)
    if not prevent_thread_lock:
        demo.block_thread()
    return demo, url


def serve_only(ctx: AppContext, host: str, port: int) -> None:
    """The JSON prediction API alone (every request needs an API key, so any --host is safe)."""
    import uvicorn

    from ui.http_api import serve_only_app

    sys.setswitchinterval(0.001)  # as in launch(): the event loop gets the interpreter back every 1 ms
    print(f"ia3app predictions on http://{host}:{port}/v1/predict (API keys: python -m storage.users key create NAME)")
    uvicorn.run(serve_only_app(ctx), host=host, port=port, log_level="warning",
                proxy_headers=bool(ctx.trusted_proxies), forwarded_allow_ips=",".join(ctx.trusted_proxies))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        ctx, auth, warning = prepare(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    if args.serve_only:
        serve_only(ctx, args.host, args.port)
        return
    if warning:
        print(warning, file=sys.stderr)
    workers = []
    if args.ray and not args.no_worker:
        from jobs.local import start_local_worker, start_ray_dispatcher

        workers.append(start_ray_dispatcher(ctx.data_dir, args.ray))
        print(f"jobs run on the Ray cluster at {args.ray}; dispatcher log: {workers[0].log_path}", file=sys.stderr)
        # the dispatcher claims training jobs only: pool scoring for "Label next" runs on this machine
        workers.append(start_local_worker(ctx.data_dir, extra_args=["--kinds", "suggest"]))
    elif not args.no_worker:
        from jobs.local import start_local_worker

        workers.append(start_local_worker(ctx.data_dir))
    from ui.model_picker import prepare_bundled, prepare_log

    if prepare_bundled(ctx.data_dir) is not None:  # the bundled real model, converted once in the background
        print(f"converting the bundled model once (about a minute on a CPU); log: {prepare_log(ctx.data_dir)}",
              file=sys.stderr)
    from ui.tempfiles import sweep

    sweep(ctx.data_dir)  # download folders a previous run left behind
    try:
        launch(ctx, host=args.host, port=args.port, auth=auth)
    finally:
        for worker in workers:
            worker.stop()
