"""The JSON prediction API, for programs that call a classifier: ``POST /v1/predict`` with an API key.

    curl -s http://127.0.0.1:7860/v1/predict \\
      -H "Authorization: Bearer $IA3APP_KEY" -H "Content-Type: application/json" \\
      -d '{"job_id": 3, "rows": [{"sentence": "a fine film"}, {"sentence": "a dull mess"}]}'
    {"job_id": 3, "predictions": [{"label": "positive", "choice": "good", "probabilities": {...}}, ...]}

Keys come from ``python -m storage.users key create NAME`` (stored hashed) and answer only for
their owner's finished jobs: someone else's job id gets the same 404 as a missing one. The rows of
concurrent requests, from every user, are batched together by the app's serving engine.

``POST /v1/suggest`` with {"job_id" or "adapter_id", "rows": [...] or "pool_id": N, "n": 8} answers the
rows to label next (ia3app.serving.suggest: least sure, spread out), each with its top two answers.

Status codes: 401 no or bad key (checked before the body is read) · 404 not one of your jobs ·
409 the job has not succeeded · 413 body or row count over its limit · 422 bad input, or rows
that take more than the request's render time (the message says what) · 200 otherwise.

Nothing heavy runs on the server's event loop: the key, the body's JSON, rendering, tokenizing
and scoring all run in worker threads, so one request never stalls other users' pages. Each
request is bounded: ``AppContext.api_max_rows`` rows, ``max_upload_bytes`` of body and
``api_max_render_s`` CPU seconds of template rendering in all; the serving engine serves users
in turn, so one user's many rows wait for the others' few.
Mounted on the Gradio app (:func:`add_routes`) or served alone (:func:`serve_only_app`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ia3app.errors import UserError
from ui.context import AppContext

PATH = "/v1/predict"
SUGGEST_PATH = "/v1/suggest"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="ia3app"'} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


MAX_ID = 2**63 - 1
"""Largest id SQLite stores; a larger one is no job of anyone's."""


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing it (413) as soon as it passes `limit` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"the request body is over {limit / 1e6:g} MB; send fewer rows per request")
    return bytes(body)


def _json(body: bytes) -> Any:
    """The body as JSON, or ApiError(422) saying why not. Runs in a worker thread."""
    try:
        return json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(422, f"the body is not valid JSON ({exc})") from None
    except RecursionError:
        raise ApiError(422, "the body's JSON is nested too deeply; send {\"job_id\": N, \"rows\": [...]}") from None


def _adapter_ref(body: Any) -> tuple[str, int]:
    """("job_id" or "adapter_id", id) from the JSON body, or ApiError(422) saying what is wrong."""
    if not isinstance(body, dict):
        raise ApiError(422, 'send a JSON object: {"job_id": N, "rows": [{"column": "text", ...}, ...]}')
    kinds = [k for k in ("job_id", "adapter_id") if k in body]
    if len(kinds) != 1:
        raise ApiError(422, 'name the adapter with exactly one of "job_id" or "adapter_id"')
    ident = body[kinds[0]]
    if isinstance(ident, bool) or not isinstance(ident, int):
        raise ApiError(422, f'"{kinds[0]}" must be an integer')
    return kinds[0], ident


def _parse(body: Any, max_rows: int) -> tuple[str, int, list[dict]]:
    """("job_id" or "adapter_id", id, rows) from the JSON body, or ApiError(422) saying what is wrong."""
    kind, ident = _adapter_ref(body)
    rows = body.get("rows")
    if not isinstance(rows, list) or not rows:
        raise ApiError(422, '"rows" must be a non-empty list of objects mapping column names to texts')
    if len(rows) > max_rows:
        raise ApiError(413, f"{len(rows):,} rows in one request; the limit is {max_rows:,} rows per request "
                            "(--api-max-rows): send them in several requests")
    clean = []
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not all(isinstance(v, (str, int, float)) or v is None for v in row.values()):
            raise ApiError(422, f"row {n} must be an object mapping column names to texts (or numbers)")
        clean.append({str(k): "" if v is None else str(v) for k, v in row.items()})
    return kind, ident, clean


def _owner(ctx: AppContext, key: str | None) -> int:
    """The key's owner, or ApiError(401). Runs in a worker thread (SQLite, argon2)."""
    from storage import api_keys

    owner = api_keys.verify_key(ctx.db(), key) if key else None
    if owner is None:
        raise ApiError(401, "a valid API key is needed: Authorization: Bearer ia3_... "
                            "(create one with python -m storage.users key create NAME)")
    return owner


def _adapter_folder(ctx: AppContext, owner: int, kind: str, ident: int):
    """(job id, adapter folder) of the owner's adapter; ApiError otherwise. Runs in a worker thread (SQLite)."""
    from jobs import queue
    from ui.owned_adapter import owned_adapter_dir

    if not 0 < ident <= MAX_ID:
        raise ApiError(404, f"{'adapter' if kind == 'adapter_id' else 'job'} #{ident} is not one of your "
                            f"{'adapters' if kind == 'adapter_id' else 'jobs'}")
    job_id = ident
    if kind == "adapter_id":
        from storage import repo

        found = repo.adapter_job(ctx.db(), ident, owner)
        if found is None:
            raise ApiError(404, f"adapter #{ident} is not one of your adapters")
        job_id = found
    if queue.get_job(ctx.db(), job_id, owner) is None:
        raise ApiError(404, f"job #{job_id} is not one of your jobs")
    try:
        _, folder = owned_adapter_dir(ctx, owner, job_id)
    except UserError as exc:
        raise ApiError(409, str(exc)) from None
    return job_id, folder


def _suggest_inputs(ctx: AppContext, owner: int, body: Any) -> tuple[int, Any, list[dict], set[int], int]:
    """(job id, adapter folder, pool rows, rows to leave out, n) of a /v1/suggest body: the rows sent, or one of
    the key owner's stored pools ("pool_id"; its rows labelled or skipped are left out). Runs in a worker thread."""
    from ia3app.jobtypes import DEFAULT_SUGGEST_N

    kind, ident = _adapter_ref(body)
    n = body.get("n", DEFAULT_SUGGEST_N)
    if isinstance(n, bool) or not isinstance(n, int):
        raise ApiError(422, '"n" must be an integer (the number of rows to suggest)')
    if ("rows" in body) == ("pool_id" in body):
        raise ApiError(422, 'send the unlabelled rows as "rows" or name one of your pools with "pool_id" (one of them)')
    pool_id = body.get("pool_id")
    if "pool_id" in body and (isinstance(pool_id, bool) or not isinstance(pool_id, int)):
        raise ApiError(422, '"pool_id" must be an integer')
    rows = _parse(body, ctx.api_max_rows)[2] if "rows" in body else None
    job_id, folder = _adapter_folder(ctx, owner, kind, ident)
    if rows is not None:
        return job_id, folder, rows, set(), n
    from storage import repo

    try:
        pool = repo.require_pool(ctx.db(), pool_id, owner)
    except UserError as exc:
        raise ApiError(404, str(exc)) from None
    return job_id, folder, ctx.files().read_json(pool.rows_path), set(repo.pool_marks(ctx.db(), pool.id, owner)), n


def api_router(ctx: AppContext) -> APIRouter:
    router = APIRouter()

    def start(owner: int, folder, rows: list[dict]):
        """Render, tokenize and queue the rows (in a worker thread), within the request's render budget."""
        from ia3app.templates.render_limits import total_budget

        engine = ctx.engine()  # the first call imports torch
        with total_budget(ctx.api_max_render_s):
            return engine.submit(folder, rows, client=("user", owner))  # batched with everyone's, users in turn

    async def _owner_and_body(request: Request) -> tuple[int, Any]:
        """The API key's owner (checked before the body is read), then the body's JSON, both off the event loop."""
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        owner = await run_in_threadpool(_owner, ctx, key)
        return owner, await run_in_threadpool(_json, await _read_body(request, ctx.max_upload_bytes))

    @router.post(PATH)
    async def predict(request: Request) -> JSONResponse:
        try:
            owner, body = await _owner_and_body(request)
            kind, ident, rows = _parse(body, ctx.api_max_rows)
            job_id, folder = await run_in_threadpool(_adapter_folder, ctx, owner, kind, ident)
            predictions = await asyncio.wrap_future(await run_in_threadpool(start, owner, folder, rows))
        except ApiError as exc:
            return _error(exc.status, str(exc))
        except UserError as exc:
            return _error(422, str(exc))
        return JSONResponse({"job_id": job_id, "predictions": [p.as_dict() for p in predictions]})

    @router.post(SUGGEST_PATH)
    async def suggest(request: Request) -> JSONResponse:
        """The n rows to label next (ia3app.serving.suggest), scored by the app's serving engine."""
        from ia3app.serving.suggest import suggest as pick_rows

        try:
            owner, body = await _owner_and_body(request)
            job_id, folder, rows, exclude, n = await run_in_threadpool(_suggest_inputs, ctx, owner, body)
            engine = await run_in_threadpool(ctx.engine)
            result = await run_in_threadpool(pick_rows, engine, folder, rows, n, exclude=exclude)
        except ApiError as exc:
            return _error(exc.status, str(exc))
        except UserError as exc:
            return _error(422, str(exc))
        return JSONResponse({"job_id": job_id, **result.to_dict()})

    @router.get("/v1/health")
    async def health() -> dict:
        return {"status": "ok"}

    return router


def add_routes(app: FastAPI, ctx: AppContext) -> None:
    """Put the API's routes in front of the (already created) Gradio app's own."""
    for route in reversed(api_router(ctx).routes):
        app.router.routes.insert(0, route)


def serve_only_app(ctx: AppContext) -> FastAPI:
    """A predictions-only server: the JSON API and nothing else (no pages, no training worker)."""
    app = FastAPI(title="ia3app predictions", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(api_router(ctx))
    return app
