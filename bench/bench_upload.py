"""Upload path and CLI start-up: a 20,000-column CSV refused on its first line vs parsed whole (the old
path, before the column limit), each upload parsed once vs once per handler, and the CLI's refusal of an
empty file (wall time, and whether torch/transformers were imported).

    python bench/bench_upload.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ia3app.tables import load_csv  # noqa: E402
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


def main() -> None:
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

    big = ROOT / "bench" / ".big.csv"
    import random

    rng = random.Random(0)
    words = "the a film good bad movie plot actor scene story great dull".split()
    big.write_text("text,label\n" + "".join(" ".join(rng.choice(words) for _ in range(80)) + f",{'pos' if i % 2 else 'neg'}\n"
                                             for i in range(9000)))
    try:
        from ui import data_page as U
        from ui.context import AppContext

        ctx = AppContext(Path(tempfile.mkdtemp()))
        first = best(lambda: U._PARSED.clear() or U.parse(str(big), ctx), 1)
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


if __name__ == "__main__":
    main()
