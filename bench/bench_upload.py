"""Upload path and CLI start-up: a 20,000-column CSV refused on its first line vs parsed whole (the old
path, before the column limit), each upload parsed once vs once per handler, the CLI's refusal of an
empty file (wall time, and whether torch/transformers were imported), and two users of a launched app
(issue 14.3: another user's upload request alone vs while the first uploads a 3.6 MB CSV; target: under
one second more). tests/test_upload_concurrency.py checks the order of the two users' events instead.

    python bench/bench_upload.py            # every section
    python bench/bench_upload.py two-users  # only the launched app's section
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ia3app.tables import SNIFF_CHARS, load_csv  # noqa: E402
from ia3app.errors import UserError  # noqa: E402


def best(fn, repeat=3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def refuse(raw: bytes, **kw) -> None:
    try:
        load_csv(raw, **kw)
    except UserError:
        return
    raise AssertionError("not refused")


def big_csv() -> str:
    import random

    rng = random.Random(0)
    words = "the a film good bad movie plot actor scene story great dull".split()
    return "text,label\n" + "".join(" ".join(rng.choice(words) for _ in range(80)) + f",{'pos' if i % 2 else 'neg'}\n"
                                    for i in range(9000))  # 3.6 MB, under the 5 MB limit


def two_users() -> None:
    """Another user's upload event (small file, through queue/join + SSE, as a browser sends it) alone, then
    while the first user uploads a 3.6 MB CSV twice and runs the data page's handlers on it."""
    import statistics
    import threading
    import uuid

    sys.path.insert(0, str(ROOT / "tests"))
    from apps import call_event, event_inputs, fn_index, launched, upload  # the suite's queue client

    from ui.context import AppContext

    with launched(AppContext(Path(tempfile.mkdtemp()))) as (demo, url, _):
        on_file, on_label, on_label_text = (fn_index(demo, n) for n in ("on_file", "on_label", "on_label_text"))
        file_box = "Training CSV"

        def timed(index, values, session=None) -> float:
            start = time.perf_counter()
            call_event(url, index, event_inputs(demo, index, values), session)
            return time.perf_counter() - start

        small = upload(url, "small.csv", b"text,label\na good film,pos\na bad film,neg\n")
        timed(on_file, {file_box: small})  # first-call costs
        alone = [timed(on_file, {file_box: small}) for _ in range(12)]
        raw, heavy, done = big_csv().encode(), [], threading.Event()

        def first_user():
            session = uuid.uuid4().hex
            try:
                for _ in range(2):
                    values = {file_box: upload(url, "big.csv", raw), "Which column holds the label": "label",
                              "Which column(s) hold the text": ["text"]}
                    heavy.extend(timed(i, values, session) for i in (on_file, on_label_text, on_label))
            finally:
                done.set()

        thread = threading.Thread(target=first_user)
        thread.start()
        during = []
        while not done.is_set():
            during.append(timed(on_file, {file_box: small}))
        thread.join()
    med_alone, med_during = statistics.median(alone), statistics.median(during)
    print(f"another user's upload event: alone median {med_alone:.3f} s / max {max(alone):.3f} s; while a 3.6 MB CSV "
          f"is uploaded twice: median {med_during:.3f} s / max {max(during):.3f} s over {len(during)} "
          f"(+{med_during - med_alone:.3f} s median, +{max(during) - max(alone):.3f} s max; target < 1 s); "
          f"the first user's handlers {', '.join(f'{h:.2f}' for h in heavy)} s; load average "
          f"{os.getloadavg()[0]:.1f}")


def main() -> None:
    if sys.argv[1:] == ["two-users"]:
        two_users()
        return
    n = 20_000
    wide = (",".join(f"c{i}" for i in range(n)) + "\n" + ",".join("x" for _ in range(n)) + "\n").encode()
    import pandas as pd

    def old_path():  # parse every column, then build the page's preview frame
        table = load_csv(wide, max_columns=10**9)
        pd.DataFrame(table.rows[:8], columns=table.columns)

    new = best(lambda: refuse(wide))
    old = best(old_path, 1)
    print(f"20,000-column CSV ({len(wide) / 1e3:.0f} kB): refused in {new * 1e3:.1f} ms; parsed + preview frame "
          f"{old * 1e3:.0f} ms ({old / new:.0f}x); the browser then drew 20,000 checkboxes, now none")

    import csv

    quotes = "text,label\n" + ',"' * 10_000  # issue 22: csv.Sniffer's quote guessing is quadratic
    new = best(lambda: refuse(quotes.encode()))

    def sniff_all():  # the old path: the sniffer on the whole line
        try:
            csv.Sniffer().sniff(quotes, delimiters=",;\t")
        except csv.Error:
            pass

    old = best(sniff_all, 1)
    print(f"20 kB line of ',\"': refused in {new * 1e3:.0f} ms (the sniffer reads {SNIFF_CHARS:,} characters); "
          f"sniffing all of it {old * 1e3:.0f} ms ({old / new:.0f}x)")

    big = ROOT / "bench" / ".big.csv"
    big.write_text(big_csv())
    try:
        from ui import data_page as U
        from ui.context import AppContext

        ctx = AppContext(Path(tempfile.mkdtemp()))

        def first_parse():
            U.clear_parse_cache()
            U.parse(str(big), ctx)

        first = best(first_parse, 1)
        cached = best(lambda: U.parse(str(big), ctx))
        print(f"3.6 MB upload: first parse {first * 1e3:.0f} ms, the page's later handlers {cached * 1e3:.2f} ms "
              f"each (were a full parse each: 3 per upload, 1 per setting change)")
    finally:
        big.unlink()

    empty = Path(tempfile.mkdtemp()) / "empty.csv"
    empty.write_bytes(b"")
    for command in (["templates", "--csv", str(empty)], ["train", "--csv", str(empty), "--model", "m", "--out", "o"]):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ia3app", *command], capture_output=True,
                              text=True, cwd=ROOT)
        wall = time.perf_counter() - start
        heavy = sorted({line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                        if line.startswith("import time")} & {"torch", "transformers", "gradio"})
        print(f"python -m ia3app {command[0]} --csv empty.csv: exit {proc.returncode} in {wall:.2f} s; "
              f"heavy imports: {', '.join(heavy) or 'none'}")
    two_users()


if __name__ == "__main__":
    main()
