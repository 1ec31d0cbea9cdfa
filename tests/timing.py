"""Waiting and measuring in tests that must pass on a busy machine (issue 21 item 4).

- ``wait_for(condition, what)``: poll a condition until it holds, with a generous deadline that only
  bounds a hang; never a fixed sleep as synchronisation, never a claim about speed.
- ``finishes(fn, what)``: fn()'s value (or the exception it raised), run in a thread that must end within a
  generous deadline: "it stops" (a render at its time limit) asserted without a claim about speed.
- ``ThreadCPU``: the CPU seconds this thread used inside a ``with`` block (``time.thread_time``): the
  work done, which other processes' load does not inflate the way it inflates wall-clock time. A
  test that claims "refused quickly" or "stopped promptly" bounds this, not the wall clock.

Timing claims proper (ratios, latencies) live in ``bench/``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

GENEROUS_S = 120.0
"""Default deadline for wait_for: long enough for a machine at load average 10+."""


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = GENEROUS_S, every_s: float = 0.05) -> Any:
    """condition()'s first truthy value; AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting until {what}"
        time.sleep(every_s)


def finishes(fn: Callable[[], Any], what: str, timeout_s: float = GENEROUS_S) -> Any:
    """fn()'s value, or the exception it raised re-raised here; AssertionError naming `what` when fn has not
    returned after `timeout_s` (it keeps running in its daemon thread: a hang fails the test, not the suite)."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as e:  # noqa: BLE001 - handed to the caller below
            outcome.append((False, e))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert outcome, f"still running after {timeout_s:g} s: {what}"
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


class ThreadCPU:
    """``with ThreadCPU() as cpu: ...`` then ``cpu.seconds``: CPU time this thread used in the block."""

    seconds: float = 0.0

    def __enter__(self) -> "ThreadCPU":
        self._start = time.thread_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.thread_time() - self._start


def load_factor() -> float:
    """How overcommitted this machine is now: the 1-minute load average per CPU, at least 1."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average on this platform
        return 1.0
    return max(1.0, load / (os.cpu_count() or 1))


def scaled(seconds: float) -> float:
    """A responsiveness bound ("cancel takes effect within 2 s") scaled by the machine's measured
    overcommitment: the bound a quiet machine meets, stretched as much as the load stretches every
    process's share of a CPU. On a quiet machine it is the bound itself."""
    return seconds * load_factor()
