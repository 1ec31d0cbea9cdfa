"""CPU-time and size bounds for rendering one row of a user's template (used by ia3app.templates.sandbox).

Jinja's sandbox stops a template from reaching Python internals; it does not bound CPU or memory.
Two mechanisms do, and together they hold without the template producing any output:

- **Sizes.** Every value a template builds (a literal list/tuple/dict, the result of an operator, a
  filter or a method call, a captured block, every item a lazy filter yields) is measured with
  `measure()` (characters of text + items of containers, counted through nested containers, so a list
  holding the same big list many times counts each time) and refused above `MAX_VALUE_SIZE`; integers
  are refused above `MAX_INT_BITS` *before* `*` or `**` computes them. What can still run in C without
  returning to Python (a `str()`, a join, a comparison) therefore works on bounded values.
- **Time.** `deadline()` opens a per-row time budget; `run_bounded()` runs rendering under a
  `sys.settrace` hook that checks it on every Python line and call of that thread (template code,
  Jinja's runtime, filters), so a loop with no output is interrupted too. The hook is installed only
  while a template renders and only on the rendering thread. The budget is the rendering thread's
  own CPU time (`time.thread_time`), not the wall clock: a loaded or paused machine (SIGSTOP, a
  suspended VM, other processes on the CPUs) never makes an ordinary template look slow. The hook
  reads the cheap monotonic clock on every event and the thread's CPU clock only once that much
  wall time has passed (CPU time never runs ahead of wall time), then moves its wall mark on by
  the CPU budget left.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from ia3app.errors import UserError

T = TypeVar("T")

MAX_RENDER_SECONDS = 1.0
"""Most CPU time (of the rendering thread) one row may spend rendering (input, answer choices and target together)."""
MAX_VALUE_SIZE = 100_000
"""Largest value a template may build: characters of text plus items of lists/tuples/dicts, nested."""
MAX_INT_BITS = 4_096
"""Largest integer a template may compute (about 1,230 decimal digits)."""
MAX_RANGE = 1_000
"""Largest range() a template may build."""


class RenderTimeout(BaseException):
    """Raised inside the rendering thread when its row's time budget is spent. A BaseException so
    that no `except Exception` in Jinja or a filter can swallow it."""


class TooLarge(Exception):
    """A value over one of the size limits; the message names the limit."""


_local = threading.local()
STOP_REQUESTS: dict[int, type[BaseException]] = {}
"""Thread id -> exception its render should raise at its next traced line (set by a job's heartbeat:
raising from the trace function is synchronous and clean, unlike an asynchronous exception)."""


def _deadline() -> tuple[float, float, bool] | None:
    """(the rendering thread's CPU-time deadline, the budget in seconds, whether a request's total budget
    set it) of the row being rendered."""
    return getattr(_local, "deadline", None)


def cpu_clock() -> float:
    """The calling thread's CPU time (seconds): what a render's budget is measured in."""
    return time.thread_time()


class TotalSpent(UserError):
    """A request's rows took more than its total render budget (see :func:`total_budget`)."""


def _total_message(seconds: float) -> str:
    return (f"the rows of this request take more than {seconds:g} s in all to render (the limit for one request); "
            "send fewer rows per request or simplify the template")


@contextmanager
def total_budget(seconds: float | None) -> Iterator[None]:
    """One CPU-time budget for the rendering of every row rendered inside on this thread (one API
    request's rows; only the time inside row renders counts, not what the caller does between them):
    each row's own budget ends no later than the total's, and a row started once it is spent is
    refused with TotalSpent. None: no total budget."""
    outer = getattr(_local, "total", None)
    if seconds is None:
        yield
        return
    _local.total = [seconds, 0.0]  # [budget, CPU seconds spent rendering so far]
    try:
        yield
    finally:
        _local.total = outer


@contextmanager
def deadline(seconds: float | None = None) -> Iterator[None]:
    """One CPU-time budget for everything rendered inside (one row's input, choices and target).
    Nested budgets never extend an outer one, nor a request's total budget."""
    limit = MAX_RENDER_SECONDS if seconds is None else seconds
    outer = _deadline()
    start = cpu_clock()
    mine = (start + limit, limit, False)
    total = getattr(_local, "total", None)
    if total is not None:
        left = total[0] - total[1]
        if left <= 0:
            raise TotalSpent(_total_message(total[0]))
        if left < limit:
            mine = (start + left, total[0], True)
    if outer is not None and outer[0] <= mine[0]:
        yield
        return
    _local.deadline = mine
    try:
        yield
    finally:
        _local.deadline = outer
        if total is not None and outer is None:  # an outer row budget counts its own time
            total[1] += cpu_clock() - start


def current_limit() -> float:
    """The time budget (CPU seconds) of the row being rendered."""
    d = _deadline()
    return MAX_RENDER_SECONDS if d is None else d[1]


def timeout_message(what: str) -> str:
    """Why a render that ran out of time was stopped: its row's limit, or its request's total."""
    d = _deadline()
    if d is not None and d[2]:
        return _total_message(d[1])
    return (f"template refused: {what} takes more than {current_limit():g} s to render one row "
            "(the per-row time limit); simplify it")


def run_bounded(fn: Callable[[], T]) -> T:
    """fn() with the current row's CPU-time deadline enforced on every Python line/call of this thread
    (raises RenderTimeout). Opens a fresh budget when none is open."""
    if _deadline() is None:
        with deadline():
            return run_bounded(fn)
    cpu_end = _deadline()[0]  # type: ignore[index]
    wall, cpu = time.monotonic, cpu_clock
    left = cpu_end - cpu()
    mark = [wall() + max(left, 0.0)]  # before this wall time the thread cannot have spent its CPU budget

    def spent() -> bool:
        now = wall()
        if now <= mark[0]:
            return False
        left = cpu_end - cpu()
        if left <= 0:
            return True
        mark[0] = now + left
        return False

    me = threading.get_ident()
    stops = STOP_REQUESTS

    def lines(frame: Any, event: str, arg: Any) -> Any:
        if spent():
            raise RenderTimeout
        if stops and me in stops:
            raise stops.pop(me)
        return lines

    def calls(frame: Any, event: str, arg: Any) -> Any:
        # every Python call (and generator resume) checks the clock; lines are traced only in the
        # template's own code, where a loop can spin without calling anything
        if spent():
            raise RenderTimeout
        if stops and me in stops:
            raise stops.pop(me)
        return lines if frame.f_code.co_filename == "<template>" else None

    previous = sys.gettrace()
    outer_sizes = getattr(_local, "sizes", None)
    if left <= 0:
        raise RenderTimeout
    try:  # the hook goes in inside the try: an exception raised as settrace returns still takes it out again
        _local.sizes = {} if outer_sizes is None else outer_sizes
        sys.settrace(calls)
        return fn()
    finally:
        sys.settrace(previous)
        _local.sizes = outer_sizes


# ---------------------------------------------------------------- sizes


def measure(value: Any, budget: int = MAX_VALUE_SIZE) -> int:
    """Characters + items of `value`, through nested containers (a shared one counts every time);
    stops counting once over `budget` (the return value is then only known to exceed it)."""
    known = getattr(_local, "sizes", None) or {}
    total = 0
    stack = [value]
    while stack:
        v = stack.pop()
        hit = known.get(id(v))
        if hit is not None and hit[0] is v:
            total += hit[1]
        elif isinstance(v, (str, bytes)):
            total += len(v)
        elif isinstance(v, bool) or v is None or isinstance(v, float):
            total += 1
        elif isinstance(v, int):
            total += 1 + v.bit_length() // 64
        elif isinstance(v, (list, tuple, set, frozenset)):
            total += len(v)
            if total > budget:
                return total
            stack.extend(v)
        elif isinstance(v, dict):
            total += len(v)
            if total > budget:
                return total
            stack.extend(v.keys())
            stack.extend(v.values())
        else:
            total += 1
        if total > budget:
            return total
    return total


def remember(value: Any, size: int) -> Any:
    """Record a container's size (computed from its parts) so measuring what contains it is O(1) per
    reference. Values are immutable in the sandbox and the record lives for one render only."""
    sizes = getattr(_local, "sizes", None)
    if sizes is not None and isinstance(value, (list, tuple, dict)):
        sizes[id(value)] = (value, size)
    return value


def check_size(value: Any, what: str = "a value") -> Any:
    """value, or TooLarge when it is over MAX_VALUE_SIZE (or an integer over MAX_INT_BITS)."""
    if isinstance(value, str):
        if len(value) > MAX_VALUE_SIZE:
            raise TooLarge(f"{what} of {len(value):,} characters (the limit is {MAX_VALUE_SIZE:,})")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        check_int_bits(value.bit_length(), what)
        return value
    size = measure(value)
    if size > MAX_VALUE_SIZE:
        raise TooLarge(f"{what} over {MAX_VALUE_SIZE:,} characters and items (the size limit)")
    return remember(value, size)


def check_int_bits(bits: int, what: str = "an integer") -> None:
    if bits > MAX_INT_BITS:
        raise TooLarge(f"{what} of more than {MAX_INT_BITS:,} bits (the integer size limit)")


def check_binop(operator: str, left: Any, right: Any) -> int | None:
    """Refuse, before computing it, an operation whose result would be over a limit. Returns the
    result's size when it follows from the operands' (repetition, concatenation), else None."""
    ints = (int,)
    if operator == "*":
        if isinstance(left, ints) and isinstance(right, ints):
            check_int_bits(abs(left).bit_length() + abs(right).bit_length(), "a product")
            return None
        for seq, n in ((left, right), (right, left)):
            if isinstance(n, ints) and not isinstance(seq, (int, float)) and hasattr(seq, "__len__"):
                size = measure(seq) * max(n, 0)
                if size > MAX_VALUE_SIZE:
                    raise TooLarge(f"a repetition over {MAX_VALUE_SIZE:,} characters and items (the size limit)")
                return size
    elif operator == "+" and isinstance(left, (list, tuple, str)) and type(left) is type(right):
        size = measure(left) + measure(right)
        if size > MAX_VALUE_SIZE:
            raise TooLarge(f"a '+' result over {MAX_VALUE_SIZE:,} characters and items (the size limit)")
        return size
    elif operator == "**":
        if isinstance(left, ints) and isinstance(right, ints) and abs(left) > 1 and right > 0:
            if abs(left).bit_length() * right > MAX_INT_BITS + right:  # 2**n has n+1 bits
                raise TooLarge(f"a power of more than {MAX_INT_BITS:,} bits (the integer size limit)")
    elif operator == "%" and isinstance(left, (str, bytes)):
        # each conversion can print one argument; a mapping can be printed by name again and again
        if left.count("%" if isinstance(left, str) else b"%") * (measure(right) + 1) > MAX_VALUE_SIZE:
            raise TooLarge(f"a %-format result over {MAX_VALUE_SIZE:,} characters (the size limit)")
    return None


def checked_iter(items: Any, what: str) -> Iterator[Any]:
    """Items of a lazy filter result, each size-checked as it is produced."""
    for item in items:
        yield check_size(item, what)
