"""Shared fixtures: offline mode, tiny models built once per session, the repository's data files.

Every file a test reads lives in this repository (``examples/``, ``tests/fixtures/``): a clone
runs the whole suite without anything beside it.
"""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ROOT = Path(__file__).resolve().parent.parent
# One converted copy of the bundled real model for the whole suite (and the developer's own ./data): every
# app a test starts in a fresh data directory would otherwise convert it again in the background (a CPU
# minute and ~520 MB each). A test of the cache's location sets or clears this itself.
os.environ.setdefault("IA3APP_MODEL_CACHE", str(ROOT / "data" / "models"))
FEWSHOT = ROOT / "examples"
TFEW_VECTORS = ROOT / "tests" / "fixtures" / "tfew" / "t03b_ia3_finish.pt"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """tiny_model_dir(kind, **sizes) -> path of a tiny random model saved with save_pretrained.

    Built once per (kind, sizes) per session; loaded back through from_pretrained like any model.
    """
    from ia3app.backbones.tiny import make_tiny_model

    built: dict = {}

    def build(kind: str = "t0", **sizes) -> Path:
        key = (kind, tuple(sorted(sizes.items())))
        if key not in built:
            name = kind + "".join(f"-{k}{v}" for k, v in key[1])
            built[key] = make_tiny_model(kind, tmp_path_factory.mktemp(name), **sizes)
        return built[key]

    return build


@pytest.fixture
def fewshot_dir():
    """examples/: T-Few's few-shot CSVs (SST-2, RTE, COPA), shipped with the repository."""
    return FEWSHOT


@pytest.fixture
def tfew_vectors_path():
    """T-Few's released (IA)^3 vectors for T0-3B, a fixture in the repository (see its README)."""
    return TFEW_VECTORS


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray test cluster for the module that asks (starting one costs 10-60 s; it is shut down after
    that module so its daemons and idle workers do not weigh on the rest of the suite): a head with
    no CPUs (the app's machine: it trains nothing) and two worker nodes with one CPU each, all on
    this machine, with real raylets and worker processes (ray.cluster_utils.Cluster). Yields
    (cluster, live nodes); a test that removes a node puts a fresh one back."""
    import signal

    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from jobs.ray_backend import connect

    env, on_term = dict(os.environ), signal.getsignal(signal.SIGTERM)  # ray.init changes both
    # idle workers (torch imported, model kept) are not killed while another driver's tasks hold the
    # node's one CPU: the dispatcher-restart test would otherwise pay the imports twice more
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "_system_config": {"num_workers_soft_limit": 4}})
    nodes = [cluster.add_node(num_cpus=1), cluster.add_node(num_cpus=1)]
    cluster.wait_for_nodes()
    connect(cluster.address)
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()
    os.environ.clear()
    os.environ.update(env)
    signal.signal(signal.SIGTERM, on_term)


@pytest.fixture
def wait_for():
    """wait_for(condition, what, timeout_s=120) -> condition's first truthy value: polling with a generous
    deadline instead of a sleep (see tests/timing.py)."""
    from timing import wait_for as wait

    return wait
