"""Interrupting a job's thread leaves its process whole (issue 21): a render after an interrupted job finishes,
and an interrupt waits for an import the thread is running (issue 23: a cancel raised inside `import torch`
left torch half-registered for every later job of that worker).

Each case runs in a fresh interpreter (tests/interrupt_child.py) with a real heartbeat thread: the bug this
guards against was process-wide (the next template render looped forever on its first traced call), so it
must not run inside the test session. The only deadline is a generous one on the child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from timing import GENEROUS_S

CHILD = Path(__file__).with_name("interrupt_child.py")


def run_child(tmp_path: Path, where: str) -> list[str]:
    try:
        done = subprocess.run([sys.executable, str(CHILD), str(tmp_path / "data"), where], capture_output=True,
                              text=True, timeout=3 * GENEROUS_S, cwd=CHILD.parent.parent, env=dict(os.environ))
    except subprocess.TimeoutExpired as exc:
        said = "".join(part.decode(errors="replace") if isinstance(part, bytes) else part or ""
                       for part in (exc.stdout, exc.stderr))  # bytes: the output read so far
        pytest.fail(f"the child never finished (a render that spins?); its output so far:\n{said}")
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_template_renders_after_the_heartbeat_interrupted_a_job_in_the_same_process(tmp_path):
    # the job's thread is in a plain loop: only the asynchronous JobInterrupted stops it. Clearing that
    # exception afterwards (as the heartbeat did) left CPython's eval breaker set, and this render looped forever
    assert run_child(tmp_path, "loop") == ["job thread: interrupted", "rendered: a fine film Good or bad?"]


def test_an_interrupt_waits_until_the_jobs_thread_has_finished_its_import(tmp_path):
    assert run_child(tmp_path, "import") == [
        "held back while importing: True",  # the heartbeat tried while the module's body ran, and held back
        "job thread: interrupted",  # raised once the import was done, in the recipe's own code
        "module imported whole: True",
        "rendered: a fine film Good or bad?",
    ]
