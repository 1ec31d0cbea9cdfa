"""Serving on Ray: the app's serving engine (ia3app.serving.engine) as Ray Serve replicas, routed by adapter.

Each replica (:class:`AdapterServer`) holds one :class:`~ia3app.serving.engine.ServingEngine` — one
backbone per model, a device bank of adapters, the mixed-adapter batcher — on whichever node Ray
placed it (a GPU each when the cluster has them). Requests name their adapter as Ray Serve's
multiplexed model id, so Serve routes an adapter's traffic to a replica that already holds it
(``@serve.multiplexed``: at most ``MAX_ADAPTERS_PER_REPLICA`` per replica, least recently used
evicted). The id is the adapter's content hash: a retrained adapter is a new id.

Nodes share no filesystem with the app: the app's machine registers each adapter's files
(``adapter.safetensors`` + ``ia3_config.json``, a few hundred KB) once with the
:class:`AdapterRegistry` actor, pinned to the app's node; a replica that is sent an adapter it
does not hold fetches them from there into a local temporary folder.

:class:`RayServing` is what the web app uses instead of a local engine when ``--ray`` is on: the
same ``submit``/``predict``/``predict_csv``/``info``/``stats``/``close``, answered by the replicas.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ray
from ray import serve

from ia3app.errors import UserError
from jobs.ray_remote import write_tree

APP_NAME = "ia3app-serving"
NAMESPACE = "ia3app"
REGISTRY_NAME = "ia3app-adapters"
ADAPTER_FILES = ("adapter.safetensors", "ia3_config.json")
MAX_ADAPTERS_PER_REPLICA = 256
REGISTRY_BUDGET_BYTES = 2 * 1024**3
"""Adapter files the registry keeps (least recently registered leave first; the app re-registers)."""


@ray.remote(num_cpus=0, max_restarts=-1)
class AdapterRegistry:
    """Adapter files by content id, on the app's machine; replicas fetch what they are sent."""

    def __init__(self) -> None:
        self._files: OrderedDict[str, dict[str, bytes]] = OrderedDict()
        self._bytes = 0

    def put(self, model_id: str, files: dict[str, bytes]) -> None:
        if model_id in self._files:
            self._files.move_to_end(model_id)
            return
        self._files[model_id] = files
        self._bytes += sum(len(b) for b in files.values())
        while self._bytes > REGISTRY_BUDGET_BYTES and len(self._files) > 1:
            _, old = self._files.popitem(last=False)
            self._bytes -= sum(len(b) for b in old.values())

    def has(self, model_id: str) -> bool:
        return model_id in self._files

    def get(self, model_id: str) -> dict[str, bytes] | None:
        return self._files.get(model_id)


class _LocalAdapter:
    """An adapter folder on the replica's node; removed when Serve evicts it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __del__(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@serve.deployment(max_ongoing_requests=64)
class AdapterServer:
    def __init__(self, serving: dict[str, Any]) -> None:
        from ia3app.serving.engine import ServingEngine

        self.engine = ServingEngine(**serving)
        self.root = Path(tempfile.mkdtemp(prefix="ia3app-serve-"))
        self.registry = ray.get_actor(REGISTRY_NAME, namespace=NAMESPACE)

    @serve.multiplexed(max_num_models_per_replica=MAX_ADAPTERS_PER_REPLICA)
    async def adapter(self, model_id: str) -> _LocalAdapter:
        files = await self.registry.get.remote(model_id)
        if files is None:
            raise UserError(f"adapter {model_id} is not registered with the serving cluster; send the request again")
        folder = self.root / model_id
        write_tree(folder, files)
        adapter = _LocalAdapter(folder)
        # backbone loaded and fit checked now, off the event loop (a bad adapter fails its own request)
        await asyncio.get_running_loop().run_in_executor(None, self.engine.preload, folder)
        return adapter

    async def predict(self, rows: list[dict], embed: bool = False) -> list:
        adapter = await self.adapter(serve.get_multiplexed_model_id())
        return await asyncio.wrap_future(self.engine.submit(adapter.folder, rows, embed))

    async def where(self) -> dict[str, Any]:
        """Which replica answered, and the adapters it holds (for tests and operators)."""
        await self.adapter(serve.get_multiplexed_model_id())
        return {"replica": serve.get_replica_context().replica_id.unique_id,
                "adapters": sorted(p.name for p in self.root.iterdir())}

    def stats(self) -> dict[str, Any]:
        return self.engine.stats()


def deploy(*, replicas: int = 1, num_gpus: float | None = None, num_cpus: float = 1.0,
           serving: dict[str, Any] | None = None):
    """Run (or update) the serving app; returns its handle. GPUs: one per replica when the cluster has any."""
    if num_gpus is None:
        num_gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    serve.start(proxy_location="Disabled")  # the web app is the front door: handles only, no HTTP proxy
    app = AdapterServer.options(num_replicas=replicas, ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus}
                                ).bind(serving or {})
    return serve.run(app, name=APP_NAME, route_prefix=None)


def registry():
    """The registry actor, created on this (the app's) node if it is not running yet."""
    strategy = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
        node_id=ray.get_runtime_context().get_node_id(), soft=False)
    return AdapterRegistry.options(name=REGISTRY_NAME, namespace=NAMESPACE, lifetime="detached",
                                   get_if_exists=True, scheduling_strategy=strategy).remote()


class RayServing:
    """The ServingEngine interface, answered by the Ray Serve app (deployed on first use if absent)."""

    def __init__(self, address: str | None = None, *, replicas: int = 1, num_gpus: float | None = None,
                 num_cpus: float = 1.0, serving: dict[str, Any] | None = None, threads: int = 32) -> None:
        if address is not None:
            from jobs.ray_backend import connect

            connect(address)
        self.registry = registry()
        try:
            self.handle = serve.get_app_handle(APP_NAME)
        except Exception:  # not deployed yet (Serve raises its own RayServeException)
            self.handle = deploy(replicas=replicas, num_gpus=num_gpus, num_cpus=num_cpus, serving=serving)
        self._ids: dict[tuple, str] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ray-serving")

    def model_id(self, adapter_dir: str | Path) -> str:
        """The adapter's content id, its files registered once per content."""
        folder = Path(adapter_dir)
        try:
            stamp = tuple((st.st_ino, st.st_mtime_ns, st.st_size)
                          for st in ((folder / name).stat() for name in ADAPTER_FILES))
        except FileNotFoundError as exc:
            raise UserError(f"no adapter in {folder} (missing {Path(exc.filename).name})") from exc
        key = (str(folder.resolve()), stamp)
        with self._lock:
            if key in self._ids:
                return self._ids[key]
        files = {name: (folder / name).read_bytes() for name in ADAPTER_FILES}
        digest = hashlib.sha256()
        for name in ADAPTER_FILES:
            digest.update(name.encode() + b"\0" + files[name])
        model_id = digest.hexdigest()[:32]
        ray.get(self.registry.put.remote(model_id, files))
        with self._lock:
            self._ids[key] = model_id
        return model_id

    def _call(self, method: str, adapter_dir: str | Path, *args):
        model_id = self.model_id(adapter_dir)
        response = getattr(self.handle.options(multiplexed_model_id=model_id), method).remote(*args)
        try:
            return response.result()
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, UserError):  # a bad row or adapter: the message is for the person
                raise exc.cause from None
            raise

    def predict(self, adapter_dir: str | Path, rows: list[dict], timeout: float | None = None,
                embed: bool = False) -> list:
        return self.submit(adapter_dir, rows, embed).result(timeout)

    def submit(self, adapter_dir: str | Path, rows: list[dict], embed: bool = False,
               client: Hashable | None = None) -> Future:
        """``client`` is not sent: on a replica each call is its own client, served in turn with the others
        (the replica's engine), which keeps one caller's many rows from holding it too."""
        return self._pool.submit(self._call, "predict", adapter_dir, rows, embed)

    def where(self, adapter_dir: str | Path) -> dict[str, Any]:
        return self._call("where", adapter_dir)

    def info(self, adapter_dir: str | Path):
        from ia3app.serving.bank import read_adapter

        return read_adapter(adapter_dir)[0]

    def predict_csv(self, adapter_dir: str | Path, data: bytes, *, max_bytes: int = 5_000_000,
                    max_rows: int = 10_000) -> bytes:
        from ia3app.serving.engine import predict_csv

        return predict_csv(self, adapter_dir, data, max_bytes=max_bytes, max_rows=max_rows)

    def stats(self) -> dict[str, Any]:
        return {"ray_serve_app": APP_NAME, "adapters_registered": len(set(self._ids.values()))}

    def close(self) -> None:
        self._pool.shutdown(wait=True)
