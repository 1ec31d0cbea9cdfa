"""The heartbeat's interrupt never lands inside an import (issue 23): a cancel during a worker's first job
raised JobInterrupted inside `import torch`, left torch half-registered, and every later job of that worker
crashed ('Trying to override a python impl ... aten::broadcast_tensors')."""

from __future__ import annotations

import sys
import threading

from jobs import progress
from jobs.progress import Heartbeat, JobInterrupted


def test_an_interrupt_waits_for_a_running_import_to_finish(tmp_path, monkeypatch, wait_for):
    release = tmp_path / "release"
    (tmp_path / "slow_module_23.py").write_text(
        "import pathlib, time\n"
        f"while not pathlib.Path({str(release)!r}).exists():\n"
        "    time.sleep(0.01)\n"
        "DONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    heart = Heartbeat(tmp_path / "unused.db", 1, "w", 30.0, 10.0)
    outcome = {}

    def job() -> None:
        try:
            with heart.interruptible():
                import slow_module_23  # noqa: F401
                while True:  # the recipe going on after the import, until interrupted
                    sum(range(1000))
        except JobInterrupted:
            outcome["interrupted"] = True

    seen_importing = threading.Event()
    real = progress.importing

    def watched(thread_id: int) -> bool:
        busy = real(thread_id)
        if busy:
            seen_importing.set()
        return busy

    monkeypatch.setattr(progress, "importing", watched)
    thread = threading.Thread(target=job, daemon=True)
    thread.start()
    wait_for(lambda: heart._target is not None and real(heart._target), "the job thread to be importing")
    interrupter = threading.Thread(target=heart._interrupt, args=("cancelled",), daemon=True)
    interrupter.start()
    assert seen_importing.wait(120), "the heartbeat never got to interrupting"
    assert thread.is_alive() and not hasattr(sys.modules["slow_module_23"], "DONE")  # held back while it imports
    release.write_text("")
    thread.join(120)
    interrupter.join(120)
    assert outcome == {"interrupted": True}  # interrupted after the import, in the recipe
    assert sys.modules["slow_module_23"].DONE  # the module was imported whole
    monkeypatch.delitem(sys.modules, "slow_module_23")
