"""Issue 22, measured: what an attacker's requests cost the other users of a running app.

Starts the real app (``app.py --auth --no-worker --trusted-proxy 127.0.0.1``, tiny model, sign-in on)
in its own process and prints:

1. another user's page load (GET / and /config, signed in) — p50/p95 idle, then while
   (a) 300 rows of a slow template (~0.4 s of CPU a row) are posted to /v1/predict,
   (b) 2,000 ordinary rows of 2 kB are posted (the server runs with --api-max-rows 2000; the
       default 1,000 refuses them with 413, checked too), and
   (c) the width payloads ``{{ ('%(a)3000000000s' % {'a': 1}) | length }}`` and
       ``%(a).999999999d`` are rendered by the web process (through /v1/predict with an adapter
       carrying them as its template: the same sandbox render the template preview calls) —
   with each request's answer (status and words); target p95 < 0.5 s;
2. the web process's peak memory added under the width payloads (RSS sampled every 10 ms; < 100 MB);
3. a victim's sign-ins (from 10.0.0.7) while 1,000 wrong attempts on their name come from 10.6.6.6;
4. the web process's memory after 10,000 failed sign-ins with unique 15 kB names from 10 addresses
   (and what the limiter's bound of 10,000 keys costs at most, measured in this process);
5. jobs whose worker process is paused (SIGSTOP, then SIGCONT) for 2 s and for 40 s during validation
   and during training, the worker running with --stall-s 30 (the 40 s pause is longer): each must
   succeed, on its first attempt.

    python -m bench.bench_abuse            # about 5 minutes on 2 cores (sections: serving sign-in pauses)
    python -m bench.bench_abuse serving    # one section
    nice -n 15 python -m bench.bench_abuse
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SLOW = "{% for i in range(n|int) %}{% for j in range(1000) %}{% endfor %}{% endfor %}{{ text }} Good or bad?"
ORDINARY = "{{ text }} Good or bad?"
WIDTH = "{{ ('%(a)3000000000s' % {'a': 1}) | length }} {{ text }}"
PRECISION = "{{ '%(a).999999999d' % {'a': 1} }} {{ text }}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def slow_n(target_s: float = 0.4) -> int:
    """Outer iterations of SLOW that take about target_s of CPU here (under the 1 s per-row limit)."""
    from ia3app.templates.rendering import render
    from ia3app.templates.spec import TemplateSpec

    spec = TemplateSpec(name="t", input=SLOW, choices=["bad", "good"])
    start = time.thread_time()
    render(spec, {"n": "40", "text": "x"})
    return max(1, min(1000, int(target_s / ((time.thread_time() - start) / 40))))


class World:
    """Data dir with users, API key, a tiny model, finished jobs with adapters, a dataset for real jobs."""

    def __init__(self, root: Path):
        from ia3app.backbones.tiny import make_tiny_model
        from storage import api_keys, users
        from storage.db import open_db
        from storage.files import FileStore

        self.data = root / "data"
        self.db, self.store = open_db(self.data), FileStore(self.data)
        self.alice = users.create_user(self.db, "alice", "alice-pass-1")
        self.mallory = users.create_user(self.db, "mallory", "mallory-pass-1")
        self.key = api_keys.create_key(self.db, "mallory")[1]
        self.model = make_tiny_model("t0", root / "tiny-t0")
        self.adapters = {name: self.finished_adapter(input_) for name, input_ in
                         (("slow", SLOW), ("ordinary", ORDINARY), ("width", WIDTH), ("precision", PRECISION))}

    def finished_adapter(self, input_: str) -> int:
        """A succeeded job of mallory's whose adapter folder carries this template (vectors at 1: the
        serving cost is the model's; no training needed to measure the server)."""
        from ia3app.adapters.files import save_adapter
        from ia3app.adapters.ia3 import inject
        from ia3app.backbones.loading import load_model
        from ia3app.config import RecipeConfig
        from ia3app.jobtypes import DataRef, JobRequest, JobResult, JobSpec, TrainingStats
        from ia3app.templates.spec import TemplateSpec
        from jobs import queue

        spec = TemplateSpec(name="bench", input=input_, choices=["bad", "good"])
        job_id = queue.submit(self.db, self.mallory, JobRequest(JobSpec(model=str(self.model), template=spec,
                                                                        eval_methods=[]), DataRef(1)))
        assert queue.claim(self.db, "bench").id == job_id
        handle = inject(load_model(str(self.model), device="cpu").model)
        folder = save_adapter(handle, self.store.adapter_dir(job_id), base_model=str(self.model),
                              extra={"template": spec.to_dict(), "recipe": {"max_length": 256},
                                     "choices": ["bad", "good"]})
        result = JobResult(model=str(self.model), template=spec, recipe=RecipeConfig(), labels=["bad", "good"],
                           params={"base": 1, "added": 1, "fraction": 1.0, "adapter_bytes": 1},
                           training=TrainingStats(steps=0, wall_s=0.0, examples_per_s=0.0, tokens_processed=0,
                                                  flops=0.0),
                           metrics={}, num_train=0, num_eval=0)
        queue.complete(self.db, job_id, "bench", result, adapter_dir=str(folder))
        return job_id


class App:
    def __init__(self, world: World, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(world.data.parent / "app.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(self.port), "--data-dir", str(world.data), "--auth",
             "--no-worker", "--trusted-proxy", "127.0.0.1", *extra], cwd=ROOT, stdout=self.log, stderr=self.log,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None and time.monotonic() < deadline, "the app did not start (app.log)"
            time.sleep(0.2)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)

    def signed_in(self, name: str, password: str, address: str = "10.0.0.7") -> httpx.Client:
        http = httpx.Client(base_url=self.url, timeout=120, headers={"X-Forwarded-For": address})
        r = http.post("/login", data={"username": name, "password": password})
        assert r.status_code == 200, r.text
        return http

    def predict(self, key: str, job_id: int, rows: list[dict]) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/predict", json={"job_id": job_id, "rows": rows},
                          headers={"Authorization": f"Bearer {key}"}, timeout=1800)


def page_loads_during(app: App, page: httpx.Client, heavy) -> tuple[list[float], object, float, float]:
    """(page-load latencies while heavy() runs in another thread, its result, its wall s, peak RSS added MB)."""
    out: dict = {}
    base = rss_mb(app.proc.pid)
    peak = [base]

    def run():
        start = time.monotonic()
        out["result"] = heavy()
        out["wall"] = time.monotonic() - start

    def sample():
        while "wall" not in out:
            peak[0] = max(peak[0], rss_mb(app.proc.pid))
            time.sleep(0.01)

    threads = [threading.Thread(target=run), threading.Thread(target=sample)]
    for t in threads:
        t.start()
    times = []
    while "wall" not in out:
        start = time.monotonic()
        assert page.get("/").status_code == 200 and page.get("/config").status_code == 200
        times.append(time.monotonic() - start)
    for t in threads:
        t.join()
    return times, out["result"], out["wall"], peak[0] - base


def words(r: httpx.Response) -> str:
    try:
        body = r.json()
    except json.JSONDecodeError:
        return r.text[:120]
    if "error" in body:
        return f'"{body["error"][:260]}"'
    return f'{len(body.get("predictions", []))} predictions'


def serving_section(world: World) -> None:
    app = App(world, "--api-max-rows", "2000")
    try:
        page = app.signed_in("alice", "alice-pass-1")
        ids = world.adapters
        app.predict(world.key, ids["ordinary"], [{"text": "warm up"}])  # the engine loads the model once
        idle = []
        for _ in range(30):
            start = time.monotonic()
            page.get("/"), page.get("/config")
            idle.append(time.monotonic() - start)
        print(f"alice's page load idle: p50 {pct(idle, .5):.3f} s, p95 {pct(idle, .95):.3f} s ({len(idle)} loads)")
        n = slow_n()
        cases = [  # (what, adapter, rows, times in a row)
            ("(c) width payload %(a)3000000000s, 30 requests", ids["width"], [{"text": "hi"}], 30),
            ("(c) precision payload %(a).999999999d, 30 requests", ids["precision"], [{"text": "hi"}], 30),
            ("(a) 300 slow rows (~0.4 CPU s each)", ids["slow"],
             [{"text": f"row {i}", "n": str(n)} for i in range(300)], 1),
            ("(b) 2,000 ordinary rows of 2 kB", ids["ordinary"],
             [{"text": (f"row {i} " + "a fine film, " * 200)[:2000]} for i in range(2000)], 1),
        ]
        for what, job_id, rows, times_in_a_row in cases:
            def heavy():
                return [app.predict(world.key, job_id, rows) for _ in range(times_in_a_row)][-1]

            times, r, wall, added = page_loads_during(app, page, heavy)
            print(f"{what}: answered {r.status_code} in {wall:.1f} s ({words(r)}); alice's page load meanwhile "
                  f"p50 {pct(times, .5):.3f} s, p95 {pct(times, .95):.3f} s ({len(times)} loads); web process "
                  f"peak RSS +{added:.0f} MB")
        r = app.predict(world.key, ids["ordinary"], [{"text": "x"}] * 2001)
        print(f"2,001 rows (over --api-max-rows): {r.status_code} {words(r)}")
    finally:
        app.close()


def sign_in_section(world: World) -> None:
    app = App(world)
    try:
        attacker = httpx.Client(base_url=app.url, timeout=120, headers={"X-Forwarded-For": "10.6.6.6"})
        statuses: dict[int, int] = {}
        done = threading.Event()

        def attack():
            for _ in range(1000):
                code = attacker.post("/login", data={"username": "alice", "password": "wrong"}).status_code
                statuses[code] = statuses.get(code, 0) + 1
            done.set()

        thread = threading.Thread(target=attack)
        thread.start()
        ok, tries, waits = 0, 0, []
        while not done.is_set():
            start = time.monotonic()
            r = httpx.post(f"{app.url}/login", data={"username": "alice", "password": "alice-pass-1"},
                           headers={"X-Forwarded-For": "10.0.0.7"}, timeout=120)
            waits.append(time.monotonic() - start)
            tries, ok = tries + 1, ok + (r.status_code == 200)
        thread.join()
        print(f"1,000 wrong sign-ins on alice from 10.6.6.6: answers {dict(sorted(statuses.items()))}; alice from "
              f"10.0.0.7 meanwhile: {ok}/{tries} signed in, p95 {pct(waits, .95):.2f} s")
        last = attacker.post("/login", data={"username": "alice", "password": "alice-pass-1"})
        print(f"the attacker's address with alice's right password: {last.status_code} {last.json()['detail']!r}")

        before = rss_mb(app.proc.pid)
        codes: dict[int, int] = {}
        start = time.monotonic()
        clients = [httpx.Client(base_url=app.url, timeout=120, headers={"X-Forwarded-For": f"10.9.0.{a}"})
                   for a in range(10)]
        for i in range(10_000):
            name = f"{i:05d}" + "n" * 15_000
            code = clients[i % 10].post("/login", data={"username": name, "password": "x"}).status_code
            codes[code] = codes.get(code, 0) + 1
        after = rss_mb(app.proc.pid)
        print(f"10,000 failed sign-ins, unique 15 kB names, 10 addresses ({time.monotonic() - start:.0f} s): answers "
              f"{dict(sorted(codes.items()))}; web process RSS {before:.0f} -> {after:.0f} MB "
              f"({after - before:+.0f} MB)")
    finally:
        app.close()
    from ui.auth import AttemptLimiter
    import tracemalloc

    limiter = AttemptLimiter()
    tracemalloc.start()
    for i in range(20_000):
        for _ in range(5):
            limiter.failed(f"name:10.9.{i % 250}.1:{i:05d}" + "n" * 15_000)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"the per-name limiter full (its bound, {len(limiter):,} keys x 5 failures): {held / 1e6:.1f} MB")


def pause_section(world: World) -> None:
    from ia3app.config import RecipeConfig
    from ia3app.jobtypes import DataRef, JobRequest, JobSpec
    from ia3app.templates.spec import TemplateSpec
    from jobs import queue
    from storage import repo

    n = slow_n(0.25)  # 16 rows: ~4 CPU s of validation, well inside the 30 s stall limit even at load 10
    rows = [{"text": f"{'a fine' if i % 2 else 'a dull'} film {i}", "label": "good" if i % 2 else "bad",
             "n": str(n)} for i in range(16)]
    dataset = repo.save_dataset(world.db, world.store, world.alice, "bench", "bench.csv", b"raw",
                                ["text", "label", "n"], rows, "label")
    log = open(world.data.parent / "worker.log", "w")
    worker = subprocess.Popen([sys.executable, "-m", "jobs.worker", "--data-dir", str(world.data), "--stall-s", "30",
                               "--poll-s", "0.2", "--device", "cpu"], cwd=ROOT, stdout=log, stderr=log,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    try:
        for phase, pause in (("validate", 2), ("validate", 40), ("train", 2), ("train", 40)):
            slow = phase == "validate"
            spec = TemplateSpec(name="t", input=SLOW if slow else ORDINARY, label_column="label",
                                choices=["bad", "good"])
            recipe = RecipeConfig(steps=20 if slow else 400, batch_size=2, warmup_steps=0, checkpoint_every=50)
            job_id = queue.submit(world.db, world.alice, JobRequest(JobSpec(model=str(world.model), template=spec,
                                                                            recipe=recipe, eval_methods=[]),
                                                                    DataRef(dataset)))
            start = time.monotonic()
            seen = ""
            while seen != phase:
                events = queue.progress_events(world.db, job_id, world.alice)
                seen = events[-1].phase if events else ""
                assert time.monotonic() - start < 600, f"job {job_id} never reached {phase}"
                time.sleep(0.05)
            time.sleep(0.5)
            worker.send_signal(signal.SIGSTOP)
            time.sleep(pause)
            worker.send_signal(signal.SIGCONT)
            while (job := queue.get_job(world.db, job_id, world.alice)).status in ("queued", "running"):
                assert time.monotonic() - start < 900, f"job {job_id} did not finish"
                time.sleep(0.2)
            print(f"job paused {pause} s during '{phase}': {job.status} after {time.monotonic() - start:.0f} s, "
                  f"attempt {job.attempts}" + (f" ({job.error_kind}: {job.error_message})" if job.error_kind else ""))
    finally:
        worker.terminate()
        worker.wait(60)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load = os.getloadavg()
    print(f"bench_abuse: {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {os.cpu_count()} CPUs, load average "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, nice {os.nice(0)}")
    sections = sys.argv[1:] or ["serving", "sign-in", "pauses"]
    with tempfile.TemporaryDirectory() as root:
        world = World(Path(root))
        for name, section in (("serving", serving_section), ("sign-in", sign_in_section), ("pauses", pause_section)):
            if name in sections:
                section(world)
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
