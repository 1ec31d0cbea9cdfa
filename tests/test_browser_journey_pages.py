"""The newcomer's journey, second pass (issue 23 items 6, 7, 8, 9 and 11), in a real browser (Playwright +
Debian Chromium), app and worker running for real: seven tabs of the app at once; the pages at 1280×800
with nothing clipped and nothing empty pretending to be live; delete confirmations naming the runs a
dataset delete affects; Cancel showing "cancelled" once the worker stopped; words on the page.
Screenshots go to tests/artifacts/23-*.png (or $IA3APP_SHOTS).
"""

from __future__ import annotations

import gzip
import re
import time

import pytest

from apps import VIEW
from test_browser_journey import pick_run, set_steps, shot, to_train_with_tiny, upload

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SPLIT_WORDS = """cells => cells.flatMap(cell => {
  const broken = [], walk = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
  for (let node = walk.nextNode(); node; node = walk.nextNode()) {
    for (const m of node.data.matchAll(/\\S+/g)) {
      const r = document.createRange(); r.setStart(node, m.index); r.setEnd(node, m.index + m[0].length);
      if (new Set([...r.getClientRects()].map(x => Math.round(x.top))).size > 1) broken.push(m[0]);
    }
  }
  return broken; })"""
"""The words of these cells drawn over more than one line (broken inside the word: "accura cy")."""

OVERFLOWING = """root => [...root.querySelectorAll('*')].filter(e => e.scrollWidth > e.clientWidth + 1
  && getComputedStyle(e).overflowX !== 'visible').map(e => `${e.tagName} ${e.scrollWidth}/${e.clientWidth}`)"""
"""The elements inside root whose content is wider than they show (clipped or scrolled sideways)."""


def start_tiny(page, csv, rows: int, steps: int) -> int:
    """Upload, keep the suggested template, start the tiny model for `steps` steps; the job's id. Start
    times the model's first steps for its estimate: at a load of 15 on two cores that took over 30 s."""
    upload(page, csv, rows)
    to_train_with_tiny(page)
    set_steps(page, steps)
    page.get_by_role("button", name="Start training").click()
    try:
        head = page.get_by_text(re.compile(r"Job #\d+: ")).first
        head.wait_for(timeout=300_000)
    except Exception:
        shot(page, "debug-start")
        raise
    return int(re.search(r"Job #(\d+)", head.inner_text()).group(1))


def test_seven_tabs_of_the_app_all_load_and_answer(app, browser):
    """Item 11: Chromium opens 6 connections per host over HTTP/1.1; with one long-lived heartbeat stream per
    tab, the sixth tab stayed on "Loading…" until another closed."""
    url, _ = app
    context = browser.new_context(viewport=VIEW)
    pages = []
    for _ in range(7):
        page = context.new_page()
        page.goto(url, timeout=180_000)  # seven heavy pages on a busy machine
        page.get_by_text("Single-user mode").wait_for(timeout=180_000)
        pages.append(page)
    for n in (6, 0):  # the last tab opened, and the first, still answer events
        page = pages[n]
        page.get_by_role("tab", name="My data & runs").click()
        page.get_by_role("button", name="↻ Refresh").click()
        page.locator("th", has_text="label column").first.wait_for(timeout=60_000)
    shot(pages[6], "11-seventh-tab")
    context.close()


def test_empty_pages_show_no_placeholder_tables_and_no_live_buttons(app, browser):
    """Item 7: before any upload or job, no table with Gradio's "1 2 3" headers; the results page offers no
    Predict or Download with nothing behind them; the Advanced panel's checkboxes have visible words and
    an empty warm-up box shows empty."""
    url, _ = app
    page = browser.new_page(viewport=VIEW)
    page.goto(url)
    page.get_by_text("Single-user mode").wait_for(timeout=60_000)
    for tab in ("1 · Data", "5 · Results & predictions"):
        page.get_by_role("tab", name=tab).click()
        headers = [t.strip() for t in page.locator("th:visible").all_inner_texts()]
        assert not {"1", "2", "3"} <= set(headers), (tab, headers)
    shot(page, "7-results-before-a-job")
    assert page.get_by_text("Results appear here when a job has finished").is_visible()
    assert not page.get_by_role("button", name="Predict", exact=True).is_visible()
    assert not page.get_by_role("button", name=re.compile("Download adapter")).is_visible()

    page.get_by_role("tab", name="3 · Train").click()
    page.get_by_text("Advanced: T-Few recipe settings").click()
    warmup = page.get_by_label("Warm-up steps (empty: use the fraction)")
    warmup.wait_for(timeout=30_000)
    assert warmup.input_value() == ""
    for name in ("Unlikelihood loss on wrong answers (L_UL)", "Length-normalised loss (L_LN)"):
        words = page.locator(".label-text", has_text=name)
        words.scroll_into_view_if_needed()
        box = words.bounding_box()
        assert box and box["width"] > 150, (name, box)  # the whole label drawn, not squeezed to nothing
    page.locator("#recipe-length_norm").scroll_into_view_if_needed()
    shot(page, "7-advanced-panel")
    page.close()


def test_a_compressed_upload_is_called_compressed(app, browser, tmp_path):
    """Item 9: a gzip file was called 'binary … NUL bytes'."""
    url, _ = app
    packed = tmp_path / "reviews.csv"
    packed.write_bytes(gzip.compress(b"sentence,label\na fine film,positive\na dull mess,negative\n"))
    page = browser.new_page(viewport=VIEW)
    page.goto(url)
    page.locator("input[type=file]").first.set_input_files(str(packed))
    page.get_by_text("this is a gzip-compressed file, not CSV text; decompress it first").wait_for(timeout=60_000)
    assert "NUL bytes" not in page.locator("body").inner_text()
    shot(page, "9-gzip-upload")
    page.close()


def test_results_table_fits_and_deletes_ask_first_naming_the_runs(app, browser, fewshot_dir):
    """Items 7 and 6: the accuracy table at 1280×800 shows every column with no word broken; deleting the
    dataset a finished run used asks first and names that run; Keep it keeps it; Delete removes it and
    Run again of that run then says its data was deleted."""
    url, ctx = app
    page = browser.new_page(viewport=VIEW)
    page.goto(url)
    job = start_tiny(page, fewshot_dir / "sst2_16shot_seed0.csv", 32, steps=4)
    page.get_by_text(re.compile(rf"Job #{job}: succeeded")).wait_for(timeout=600_000)
    page.get_by_role("button", name="See results →").click()
    page.get_by_text(f"Results of job #{job}").wait_for(timeout=120_000)
    table = page.locator("#results-metrics")
    table.locator("th", has_text="FLOPs / prediction").wait_for(timeout=60_000)
    table.scroll_into_view_if_needed()
    shot(page, "7-accuracy-table")
    assert table.evaluate(OVERFLOWING) == []
    assert table.locator("th").evaluate_all(SPLIT_WORDS) == []
    flops = table.locator("th", has_text="FLOPs / prediction").bounding_box()
    assert flops and flops["x"] + flops["width"] <= VIEW["width"]
    assert page.get_by_role("button", name="Predict", exact=True).is_visible()  # now there is a job behind it

    from storage import repo
    dataset = next(d.id for d in repo.list_datasets(ctx.db(), ctx.user_id(None)) if d.filename.startswith("sst2"))
    page.get_by_role("tab", name="My data & runs").click()
    page.get_by_role("button", name="↻ Refresh").click()
    page.get_by_label("Dataset", exact=True).click()
    page.get_by_role("option", name=re.compile(rf"^#{dataset} ·")).click()
    page.get_by_role("button", name="Delete dataset…").click()
    question = page.locator("#library-confirm-dataset-text")
    question.get_by_text(re.compile(rf"used it: .*#{job}")).wait_for(timeout=60_000)
    assert "Run again with changes" in question.inner_text()
    shot(page, "6-delete-dataset-question")
    page.locator("#library-confirm-dataset-keep").click()
    page.get_by_text("Nothing deleted: the dataset is kept.").wait_for(timeout=60_000)
    assert repo.get_dataset(ctx.db(), dataset, ctx.user_id(None)) is not None
    page.get_by_role("button", name="Delete dataset…").click()
    question.get_by_text(re.compile(rf"used it: .*#{job}")).wait_for(timeout=60_000)
    page.locator("#library-confirm-dataset-yes").click()
    page.get_by_text(f"✓ Deleted dataset #{dataset}").wait_for(timeout=60_000)
    assert repo.get_dataset(ctx.db(), dataset, ctx.user_id(None)) is None

    pick_run(page, job)
    page.get_by_role("button", name="Run again with changes →").click()
    page.get_by_text(re.compile(rf"job #{job}'s training data \(dataset #{dataset}\) was deleted")).wait_for(
        timeout=60_000)
    shot(page, "6-run-again-after-delete")
    page.get_by_role("button", name="Delete run…").click()
    page.locator("#library-confirm-job-text").get_by_text(f"Delete run #{job}").wait_for(timeout=60_000)
    page.locator("#library-confirm-job-yes").click()
    page.get_by_text(f"✓ Deleted job #{job}").wait_for(timeout=60_000)
    page.close()


def test_cancel_shows_cancelled_once_the_worker_stopped(app, browser, fewshot_dir):
    """Item 8: Cancel waits for the worker to record the stop and shows it, rather than a later timer tick."""
    url, _ = app
    page = browser.new_page(viewport=VIEW)
    page.goto(url)
    job = start_tiny(page, fewshot_dir / "sst2_16shot_seed0.csv", 32, steps=5000)
    page.get_by_text(re.compile(r"step [1-9]\d* / 5000")).first.wait_for(timeout=600_000)  # training, not loading
    clicked = time.monotonic()
    page.get_by_role("button", name="Cancel job").click()
    page.get_by_text("Cancelled.", exact=True).wait_for(timeout=60_000)
    page.get_by_text(re.compile(rf"Job #{job}: cancelled")).wait_for(timeout=60_000)
    print(f"Cancel click -> 'cancelled' on the page: {time.monotonic() - clicked:.2f} s")
    assert not page.get_by_role("button", name="Cancel job").is_visible()
    shot(page, "8-cancelled")
    page.close()
