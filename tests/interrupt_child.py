"""Run in a fresh interpreter by tests/test_heartbeat.py (``python tests/interrupt_child.py DATA_DIR WHERE``).

A claimed job's thread runs inside ``Heartbeat.interruptible()`` while a real heartbeat thread watches it; the
worker is told to shut down, so the heartbeat interrupts the thread. WHERE says where the thread is then:

- ``loop``: in a plain Python loop (no render, no stop check): only the asynchronous JobInterrupted stops it;
- ``import``: inside ``import interrupt_probe_module``, a module (written next to DATA_DIR) whose body waits
  until this script writes a ``release`` file, after the heartbeat has held the interrupt back.

Then this process renders a template in the sandbox (the render's trace hook on). It prints one line per fact;
a render that never returns is what tests/test_heartbeat.py catches, with a generous deadline on this process.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

from ia3app.templates.rendering import render  # noqa: E402
from ia3app.templates.spec import TemplateSpec  # noqa: E402
from jobs import queue as q  # noqa: E402
from jobs.progress import Heartbeat, JobInterrupted  # noqa: E402
from storage.db import DB_FILENAME  # noqa: E402
from test_worker import Env  # noqa: E402
from timing import wait_for  # noqa: E402

PROBE = "interrupt_probe_module"


def main(data_dir: Path, where: str) -> None:
    env = Env(data_dir, data_dir.parent / "no-model")
    env.submit()
    job = q.claim(env.db, "child", 30.0)
    shutdown = threading.Event()
    heart = Heartbeat(data_dir / DB_FILENAME, job.id, "child", 30.0, 10.0, tick_s=0.05, grace_s=0.0,
                      stop_requested=shutdown.is_set)
    modules = data_dir.parent / "modules"
    modules.mkdir()
    (modules / f"{PROBE}.py").write_text(
        "import pathlib, time\n"
        "here = pathlib.Path(__file__).parent\n"
        "(here / 'started').write_text('')\n"
        "while not (here / 'release').exists():\n"
        "    time.sleep(0.01)\n"
        "DONE = True\n")
    sys.path.insert(0, str(modules))
    outcome: list[str] = []

    def run() -> None:
        try:
            with heart.interruptible():
                if where == "import":
                    import interrupt_probe_module  # noqa: F401
                while True:  # the recipe going on, with no stop check of its own
                    sum(range(1000))
        except JobInterrupted:
            outcome.append("interrupted")

    thread = threading.Thread(target=run, name="job", daemon=True)
    heart.start()
    thread.start()
    if where == "import":
        wait_for(lambda: (modules / "started").exists(), "the job's thread is importing the probe module")
    shutdown.set()  # the heartbeat now interrupts the job's thread (no grace: it never stops by itself)
    if where == "import":
        wait_for(heart.held_back.is_set, "the heartbeat holds the interrupt back while the thread imports")
        print("held back while importing:", thread.is_alive() and not hasattr(sys.modules[PROBE], "DONE"))
        (modules / "release").write_text("")
    thread.join()
    heart.stop()
    print("job thread:", outcome[0] if outcome else "not interrupted")
    if where == "import":
        print("module imported whole:", getattr(sys.modules.get(PROBE), "DONE", False))
    spec = TemplateSpec(name="t", input="{% for w in text.split() %}{{ w }} {% endfor %}Good or bad?",
                        choices=["bad", "good"], label_column="label")
    print("rendered:", render(spec, {"text": "a fine film", "label": "good"}).input, flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
