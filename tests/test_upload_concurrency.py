"""The upload path against a launched app, two clients at once (issue 14.3): a 20,000-column CSV is refused in
words, and while one user's upload handlers run on a large file, another user's requests are answered. The
uploads go through the same HTTP routes as the browser (upload, queue/join, SSE).

How long the other user waits (the issue's "not delayed by more than a second") is a timing claim, measured
side by side by ``python -m bench.bench_upload``; here the order of the two users' events shows it."""

from __future__ import annotations

import threading
import uuid

import pytest

from apps import call_event, event_inputs, fn_index, launched, upload
from bench.bench_upload import big_csv  # the bench's 3.6 MB file: 9,000 rows of 80 words

FILE = "Training CSV"
LABEL = "Which column holds the label"
TEXTS = "Which column(s) hold the text"


@pytest.fixture(scope="module")
def warm_app(tmp_path_factory):
    """(demo, url) of the app in single-user mode, no worker, its first upload handled (first-call costs)."""
    from ui.context import AppContext

    with launched(AppContext(tmp_path_factory.mktemp("upload-data"))) as (demo, url, _):
        on_file = fn_index(demo, "on_file")
        call_event(url, on_file, event_inputs(demo, on_file, {FILE: upload(url, "warm.csv", b"text,label\na,pos\nb,neg\n")}))
        yield demo, url


def wide_csv(n: int) -> bytes:
    return (",".join(f"c{i}" for i in range(n)) + "\n" + ",".join("x" for _ in range(n)) + "\n").encode()


def test_twenty_thousand_columns_are_refused_in_words(warm_app):
    demo, url = warm_app
    on_file = fn_index(demo, "on_file")
    out = call_event(url, on_file, event_inputs(demo, on_file, {FILE: upload(url, "wide.csv", wide_csv(20_000))}))
    assert "the file has 20,000 columns; the limit is 200" in out[0]


def served_inside(log: list[tuple[str, int]]) -> int:
    """How many of user B's handlers ran from start to end while one of user A's ran, in `log`'s order (what
    the two clients saw, in turn: ("a-process_starts", k), ("b-process_completed", j)...)."""
    running_a: int | None = None  # A's handler running now (A is one browser tab: one at a time)
    started_b: dict[int, int] = {}  # B's handler -> the A handler running when it started
    inside = 0
    for what, which in log:
        if what == "a-process_starts":
            running_a = which
        elif what == "a-process_completed":
            running_a = None
        elif what == "b-process_starts" and running_a is not None:
            started_b[which] = running_a
        elif what == "b-process_completed" and running_a is not None and started_b.get(which) == running_a:
            inside += 1
    return inside


def test_served_inside_counts_only_handlers_that_ran_within_the_other_users():
    log = [("b-process_starts", 1), ("a-process_starts", 1), ("b-process_completed", 1),  # began before A's
           ("b-process_starts", 2), ("b-process_completed", 2),  # inside
           ("b-process_starts", 3), ("a-process_completed", 1), ("b-process_completed", 3),  # ended after A's
           ("a-process_starts", 2), ("b-process_starts", 4), ("a-process_completed", 2),
           ("a-process_starts", 3), ("b-process_completed", 4)]  # began in one of A's handlers, ended in the next
    assert served_inside(log) == 1


@pytest.mark.slow
def test_one_users_upload_does_not_delay_another(warm_app):
    """User A uploads a 3.6 MB CSV again and again (each a fresh copy, parsed anew) and sets its label column;
    meanwhile user B uploads a small file over and over. B's handlers must run, start to end, while A's file
    is parsed: three of them inside A's on_file, seen in the order of the two event streams. A queue or a lock
    that made B wait for A puts every B handler after the A handler it met, and A gives up after 20 uploads."""
    demo, url = warm_app
    on_file, on_label, on_label_text = (fn_index(demo, name) for name in ("on_file", "on_label", "on_label_text"))
    log: list[tuple[str, int]] = []  # appended by both users' threads: the order the two clients saw
    raw, small = big_csv().encode(), upload(url, "small.csv", b"text,label\na good film,pos\na bad film,neg\n")
    done = threading.Event()
    answers: list[str] = []
    errors: list[BaseException] = []

    def seen(user: str, which: int):
        return lambda msg: msg in ("process_starts", "process_completed") and log.append((f"{user}-{msg}", which))

    def user_a():
        session = uuid.uuid4().hex  # one browser tab
        try:
            for k in range(20):
                file = upload(url, "big.csv", raw)
                answers.append(call_event(url, on_file, event_inputs(demo, on_file, {FILE: file}), session,
                                          seen("a", k))[0])  # the parse of a new upload: A's heavy handler
                values = {FILE: file, LABEL: "label", TEXTS: ["text"]}
                call_event(url, on_label_text, event_inputs(demo, on_label_text, values), session)
                call_event(url, on_label, event_inputs(demo, on_label, values), session)
                if served_inside(list(log)) >= 3:
                    break
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)
        finally:
            done.set()

    thread = threading.Thread(target=user_a)
    thread.start()
    j = 0
    while not done.is_set():
        j += 1
        out = call_event(url, on_file, event_inputs(demo, on_file, {FILE: small}), seen=seen("b", j))
        assert out[0].startswith("**2 rows**"), out[0]
    thread.join()
    assert not errors, errors
    assert answers and all(a.startswith("**9000 rows**") for a in answers), answers[:1]
    print(f"A's big uploads: {len(answers)}; B's requests: {j}; B's handlers inside A's: {served_inside(log)}")
    assert served_inside(log) >= 3, log
