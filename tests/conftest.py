"""Shared fixtures: offline mode, tiny models built once per session, the repository's data files.

Every file a test reads lives in this repository (``examples/``, ``tests/fixtures/``): a clone
runs the whole suite without anything beside it.
"""

import os
from collections import Counter
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
# One torch thread for the jobs a test runs in this process: the product's default follows how many cores
# are idle when a job starts (ia3app.backbones.threads), and two jobs a test compares bit for bit must not
# differ because the machine got busier in between. tests/test_threads.py checks the default itself.
os.environ.setdefault("IA3APP_TRAIN_THREADS", "1")
FEWSHOT = ROOT / "examples"
TFEW_VECTORS = ROOT / "tests" / "fixtures" / "tfew" / "t03b_ia3_finish.pt"


# ----- several processes: `make test TEST_WORKERS=2` runs pytest-xdist `-n 2`; pytest.ini sets `--dist loadfile` ---
# Each test file runs whole on one worker, in file order: a module's fixtures (an app and its data, Chromium, a
# loaded model, the Ray test cluster) are built once and never on two workers at once, as in a serial run. (xdist's
# `loadgroup` marks do nothing with pytest 9.2: xdist 3.8.0 renames item._nodeid, which pytest 9.2 no longer reads.)
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, items: list[pytest.Item]) -> None:
    """On an xdist worker, the files that hold slow tests come first, most slow tests first (each file's own
    order kept): the long pieces of work start early and the short ones fill in at the end, so no worker is
    left alone with a minutes-long file. Every worker sorts the same collection the same way, as xdist needs."""
    if not hasattr(session.config, "workerinput"):  # a serial run, or the xdist controller
        return
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])  # stable: files with no slow test stay in collection order


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


# ----- launched apps and Chromium (tests/apps.py) ------------------------------------------------------------
def skip_without_browser(request) -> None:
    """A module marked `browser` is skipped before its app starts where Chromium is absent."""
    from apps import need_browser

    if request.node.get_closest_marker("browser"):
        need_browser()


@pytest.fixture(scope="module")
def app(tmp_path_factory, request):
    """(url, ctx) of the app in single-user mode with one local worker, on a fresh data directory, for the module."""
    from apps import launched
    from ui.context import AppContext

    skip_without_browser(request)
    ctx = AppContext(tmp_path_factory.mktemp("app-data"))
    with launched(ctx, worker=True) as (_, url, _):
        yield url, ctx


@pytest.fixture(scope="module")
def signed_in_site(tmp_path_factory, request):
    """The app with sign-in required and the accounts of apps.USERS (alice, bob), no worker, for the module:
    ``.ctx``, ``.url``, ``.demo``, ``.users`` (name -> user id)."""
    from types import SimpleNamespace

    from apps import USERS, launched
    from ui.context import AppContext

    skip_without_browser(request)
    ctx = AppContext(tmp_path_factory.mktemp("signed-in-data"), auth_required=True)
    with launched(ctx, users=USERS) as (demo, url, ids):
        yield SimpleNamespace(ctx=ctx, url=url, demo=demo, users=ids)


@pytest.fixture
def proxied_site(tmp_path, monkeypatch, request):
    """(ctx, demo, url) of the app with sign-in (alice, bob) behind a proxy on 127.0.0.1 that the operator named
    (--trusted-proxy): X-Forwarded-For says who the client is. One per test (sign-in limits are counted)."""
    from apps import USERS, launched
    from ui.context import AppContext

    skip_without_browser(request)
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "127.0.0.1")  # restored after the test (launch sets it)
    ctx = AppContext(tmp_path / "data", auth_required=True, trusted_proxies=["127.0.0.1"])
    with launched(ctx, users=USERS) as (demo, url, _):
        yield ctx, demo, url


@pytest.fixture(scope="module")
def browser():
    """Chromium (Playwright, Debian's /usr/bin/chromium) for the module; skips the test where it is absent."""
    from apps import chromium

    with chromium() as b:
        yield b
