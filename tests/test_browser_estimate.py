"""The time a run costs, said where it is decided, and evaluation's progress (issue 23 items 3 and 4), in a
real browser.

The step count sits beside Start with the estimated time of the whole run; the estimate is measured by the
worker (a short probe), weighs the data's tokens, counts the evaluation of the held-out rows as its own
term and says what it is based on; the tiny demo model is never called instant. While the job evaluates,
the job page shows the rows scored so far moving (the held-out rows are scored in batches of 16, so 40 rows
take three). Screenshots go to tests/artifacts/23-estimate-*.png.
"""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import pytest

from apps import VIEW
from test_browser_journey import shot, start, to_train_with_tiny, upload

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SST2 = Path(__file__).resolve().parent.parent / "bench" / "data" / "tfew_fewshot" / "sst2.csv"
SCORED = re.compile(r"([\w-]+) \(method (\d) of (\d)\): (\d+) of (\d+) rows scored")


def sst2_csv(folder: Path) -> Path:
    """160 SST-2 rows (T-Few's few-shot samples), sentence and label: 40 held out at the page's 25 %."""
    with SST2.open(newline="", encoding="utf-8") as f:
        rows = [{"sentence": r["sentence"], "label": r["label"]} for r in csv.DictReader(f)]
    path = folder / "sst2_160.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["sentence", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_measured_estimate_of_the_whole_run_beside_start_then_rows_scored_move(app, browser, tmp_path):
    url, _ = app
    page = browser.new_page(viewport=VIEW)
    page.goto(url)
    upload(page, sst2_csv(tmp_path), 160)
    to_train_with_tiny(page)
    steps = page.locator("#ia3-steps input")
    start_button = page.get_by_role("button", name="Start training")
    assert steps.is_visible() and steps.input_value() == "1000"  # without opening Advanced
    assert not page.get_by_label("Examples per step (T-Few: 8)").is_visible()
    box, button = steps.bounding_box(), start_button.bounding_box()
    assert abs((box["y"] + box["height"] / 2) - (button["y"] + button["height"] / 2)) < box["height"]  # one row
    estimate = page.locator("#ia3-estimate")
    # the worker's probe: training steps and scoring batches timed at a few lengths (slow on a busy machine)
    estimate.get_by_text("measured here from a short probe the worker ran").wait_for(timeout=900_000)
    text = estimate.inner_text()
    assert re.search(r"Estimated time: about \d+ (h|min|s)", text) and "for 1000 steps and the evaluation" in text, text
    assert "your 120 rows" in text and "2 answer choices" in text and "tokens per padded batch of 8" in text, text
    assert "evaluating zero-shot, in-context and T-Few on 40 held-out rows" in text, text
    assert "instant" not in page.locator("body").inner_text().lower()
    shot(page, "estimate-1-beside-start")
    steps.fill("2")
    steps.press("Tab")
    estimate.get_by_text("for 2 steps and the evaluation").wait_for(timeout=120_000)
    shot(page, "estimate-2-two-steps")

    job = start(page)
    header = page.locator("#ia3-job-header")
    seen: list[tuple[str, int, int]] = []  # (method, rows scored, rows) shown while the job evaluated
    shot_taken = False
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        text = header.inner_text()
        if f"Job #{job}: succeeded" in text:
            break
        assert f"Job #{job}: failed" not in text, text
        if f"Job #{job}: running — evaluate" in text:
            for method, _, _, done, rows in SCORED.findall(text):
                if (method, int(done), int(rows)) not in seen:
                    seen.append((method, int(done), int(rows)))
                if int(done) < int(rows) and not shot_taken:
                    shot(page, "estimate-3-rows-scored-moving")
                    shot_taken = True
        page.wait_for_timeout(200)
    else:
        pytest.fail(f"job {job} did not finish in 15 minutes; rows scored seen: {seen}")
    assert any(done < rows for _, done, rows in seen), f"no partial count was shown while evaluating: {seen}"
    assert len(seen) >= 2 and all(rows == 40 for _, _, rows in seen), seen
    log = page.get_by_label("Latest log lines").input_value()
    assert "t-few (method 3 of 3): 16 of 40 rows scored" in log, log  # the first batch is always reported
    assert "t-few (method 3 of 3): 40 of 40 rows scored" in log, log
    shot(page, "estimate-4-succeeded")
    page.close()
