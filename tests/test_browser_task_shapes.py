"""One browser journey per task shape on the example files shipped in examples/: single text (SST-2),
a text pair (RTE), multiple choice with per-row options (COPA). Upload, template, train the tiny
model a few steps, results, a prediction typed in the "Try it" boxes (in the template's order).
Screenshots go to tests/artifacts/shape_<name>_*.png.
"""

from __future__ import annotations

import re

import pytest

from test_browser_e2e import shot, start_tiny_training

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SHAPES = {
    # file, the shape the template page names, the Try-it boxes in order
    "single": ("sst2_16shot_seed0.csv", ["sentence"]),
    "pair": ("rte_32shot_seed0.csv", ["premise", "hypothesis"]),
    "choice": ("copa_32shot_seed0.csv", ["premise", "question", "choice1", "choice2"]),
}


def fields_in_page_order(page, names: list[str]) -> list[str]:
    boxes = {n: page.get_by_role("textbox", name=n, exact=True).bounding_box() for n in names}
    return sorted(names, key=lambda n: (boxes[n]["y"], boxes[n]["x"]))


@pytest.mark.parametrize("shape", list(SHAPES))
def test_task_shape_journey(app, browser, fewshot_dir, shape):
    url, _ = app
    filename, boxes = SHAPES[shape]
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(url)
    page.locator("input[type=file]").first.set_input_files(str(fewshot_dir / filename))
    page.get_by_text("rows to train on").first.wait_for(timeout=60_000)
    shot(page, f"shape_{shape}_1_data")
    page.get_by_role("button", name="Save data and continue →").click()
    try:
        page.get_by_text("The template fits all").first.wait_for(timeout=60_000)
    except Exception:
        shot(page, f"shape_{shape}_debug_template")
        raise
    if shape == "single":  # sst2 fits two built-ins: train with both (T-Few's template per example per step)
        page.get_by_role("checkbox", name="text_label", exact=True).check()
    shot(page, f"shape_{shape}_2_template")
    page.get_by_role("button", name="Use this template and continue to training →").click()
    if shape == "single":
        page.get_by_text("+ 1 more for training (text_label)").wait_for(timeout=30_000)
    start_tiny_training(page, steps=4)
    try:
        page.get_by_text(re.compile(r"Job #\d+: succeeded")).wait_for(timeout=300_000)
    except Exception:
        shot(page, f"shape_{shape}_debug_job")
        raise
    page.get_by_role("button", name="See results →").click()
    page.get_by_text(re.compile(r"Results of job #\d+")).wait_for(timeout=60_000)
    page.get_by_text("Try it: type an example").scroll_into_view_if_needed()
    for name in boxes:
        page.get_by_role("textbox", name=name, exact=True).wait_for(timeout=30_000)
    assert fields_in_page_order(page, boxes) == boxes  # the template's order, not the alphabet's
    for name in boxes:
        page.get_by_role("textbox", name=name, exact=True).fill(f"an example {name}")
    page.get_by_role("button", name="Predict", exact=True).click()
    answer = page.locator("[data-testid=label-output-value]").first
    answer.wait_for(timeout=60_000)
    assert answer.inner_text().strip()
    page.get_by_role("button", name="Predict", exact=True).scroll_into_view_if_needed()
    shot(page, f"shape_{shape}_3_results")
    if shape == "single":  # my runs: run again with changes prefills the train page
        page.get_by_role("tab", name="My data & runs").click()
        page.get_by_role("button", name="↻ Refresh").click()
        runs = page.get_by_label("Runs (pick one to run again or delete; two or more to compare)")
        runs.click()
        page.get_by_role("option", name=re.compile(r"#\d+ · sst2")).first.click()
        page.keyboard.press("Escape")
        page.get_by_role("button", name="Run again with changes →").click()
        page.get_by_text(re.compile(r"prefilled from job #\d+")).wait_for(timeout=30_000)
        page.get_by_text("+ 1 more for training").first.wait_for(timeout=30_000)
        shot(page, f"shape_{shape}_4_run_again")
    page.close()


def test_a_link_to_a_job_that_is_not_mine_says_so(app, browser):
    url, _ = app
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(url + "?job=987654")
    page.get_by_text("No such job").first.wait_for(timeout=30_000)
    assert page.get_by_role("button", name="Cancel job").count() == 0 or not page.get_by_role(
        "button", name="Cancel job").first.is_visible()
    shot(page, "job_link_not_mine")
    page.close()
