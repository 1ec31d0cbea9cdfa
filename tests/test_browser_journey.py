"""The newcomer's journey, second pass (issue 23), in a real browser (Playwright + Debian Chromium).

Each test is something a new user hit: the header after signing in, the loss chart of a job started from
Train, Run again refilling every page, delete confirmations, the layout at 1280×800, the words, the
estimate beside Start. Screenshots go to tests/artifacts/23-*.png.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from apps import USERS, VIEW

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(os.environ.get("IA3APP_SHOTS") or Path(__file__).resolve().parent / "artifacts")


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"23-{name}.png"))


def sign_in(page, url: str, name: str, password: str) -> None:
    page.goto(url)
    page.get_by_label("username").fill(name)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name=re.compile("login", re.I)).click()


def test_header_names_who_signed_in_and_signs_out(signed_in_site, browser):
    url = signed_in_site.url
    pages = {}
    for name, password in USERS.items():
        page = browser.new_context(viewport=VIEW).new_page()
        sign_in(page, url, name, password)
        page.get_by_text(f"Signed in as {name}").wait_for(timeout=60_000)
        assert page.get_by_text("Not signed in").count() == 0
        pages[name] = page
    shot(pages["alice"], "1-signed-in-alice")
    shot(pages["bob"], "1-signed-in-bob")
    out = pages["alice"].locator("#ia3-sign-out")
    out.wait_for(timeout=30_000)
    out.click()
    pages["alice"].get_by_label("password").wait_for(timeout=30_000)  # back at the sign-in form
    shot(pages["alice"], "1-signed-out")
    pages["bob"].reload()
    pages["bob"].get_by_text("Signed in as bob").wait_for(timeout=60_000)  # the other user is still in


def upload(page, csv: Path, rows: int) -> None:
    page.locator("input[type=file]").first.set_input_files(str(csv))
    page.get_by_text(f"{rows} rows").first.wait_for(timeout=30_000)
    page.get_by_text("rows to train on").first.wait_for(timeout=30_000)
    page.get_by_role("button", name="Save data and continue →").click()
    page.get_by_text("The template fits all").first.wait_for(timeout=30_000)


def to_train_with_tiny(page) -> None:
    page.get_by_role("button", name="Use this template and continue to training →").click()
    page.get_by_text("Step 3 — train").wait_for(timeout=30_000)
    model = page.get_by_label("Model", exact=True)
    model.click()
    page.get_by_role("option", name=re.compile("Tiny demo model")).click()
    page.get_by_text("random weights").first.wait_for(timeout=120_000)  # the model notes; slow on a loaded machine


def set_steps(page, steps: int, batch: int = 2) -> None:
    if not page.get_by_label("Examples per step (T-Few: 8)").is_visible():
        page.get_by_text("Advanced: T-Few recipe settings").click()
    for box, value in ((page.get_by_label(re.compile("^Optimizer steps")).first, steps),
                       (page.get_by_label("Examples per step (T-Few: 8)"), batch)):
        box.fill(str(value))
        box.press("Tab")


def start(page) -> int:
    page.get_by_role("button", name="Start training").click()
    head = page.get_by_text(re.compile(r"Job #\d+: ")).first
    head.wait_for(timeout=30_000)
    return int(re.search(r"Job #(\d+)", head.inner_text()).group(1))


def line_paths(page, plot_id: str) -> int:
    """How many drawn lines (vega's SVG line marks with a path) the plot holds."""
    return page.locator(f"#{plot_id} g.mark-line path").count()


def test_loss_chart_is_drawn_for_a_job_started_from_train(app, browser, fewshot_dir):
    url, _ = app
    page = browser.new_page(viewport=VIEW)
    page.goto(url)
    upload(page, fewshot_dir / "sst2_16shot_seed0.csv", 32)
    to_train_with_tiny(page)
    set_steps(page, 12)
    start(page)
    page.get_by_text(re.compile(r"step (\d+) / 12")).first.wait_for(timeout=120_000)
    page.get_by_text(re.compile(r"Job #\d+: succeeded")).wait_for(timeout=300_000)
    page.wait_for_function("() => document.querySelectorAll('#ia3-loss g.mark-line path').length > 0",
                           timeout=30_000)
    shot(page, "2-loss-chart-from-train")
    legend = " ".join(page.locator("#ia3-loss g.role-legend text").all_text_contents())
    assert "total" in legend and "length-norm" in legend, legend
    strokes = page.locator("#ia3-loss g.mark-line path").evaluate_all("ps => ps.map(p => p.getAttribute('stroke'))")
    assert strokes and all(strokes), strokes  # every line drawn in a colour (an empty domain left them none)
    page.close()


def train_tiny(page, csv: Path, rows: int, steps: int = 2) -> int:
    """Upload, keep the suggested template, train the tiny model `steps` steps; returns the job id once done."""
    page.get_by_role("tab", name="1 · Data").click()
    upload(page, csv, rows)
    to_train_with_tiny(page)
    set_steps(page, steps)
    job = start(page)
    page.get_by_text(re.compile(rf"Job #{job}: succeeded")).wait_for(timeout=300_000)
    return job


def pick_run(page, job: int) -> None:
    page.get_by_role("tab", name="My data & runs").click()
    page.get_by_role("button", name="↻ Refresh").click()
    page.get_by_label(re.compile("^Runs")).click()
    page.get_by_role("option", name=re.compile(rf"^#{job} ·")).click()
    page.keyboard.press("Escape")


def test_run_again_refills_data_template_and_train(app, browser, fewshot_dir):
    url, _ = app
    page = browser.new_page(viewport=VIEW)
    page.goto(url)
    job = train_tiny(page, fewshot_dir / "copa_32shot_seed0.csv", 32)
    page.get_by_role("tab", name="1 · Data").click()
    upload(page, fewshot_dir / "rte_32shot_seed0.csv", 32)  # the pages now show RTE
    pick_run(page, job)
    page.get_by_role("button", name="Run again with changes →").click()
    page.get_by_text(f"prefilled from job #{job}").wait_for(timeout=30_000)
    shot(page, "5-run-again-train")
    page.get_by_role("tab", name="1 · Data").click()
    page.get_by_text(f"the data of job #{job}").wait_for(timeout=30_000)
    text = page.locator("body").inner_text()
    assert "copa_32shot_seed0.csv" in text and "choice1" in text and "hypothesis" not in text
    shot(page, "5-run-again-data")
    page.get_by_role("tab", name="2 · Template").click()
    page.get_by_text("The template fits all").first.wait_for(timeout=30_000)
    text = page.locator("body").inner_text()
    assert "choice1" in text and "hypothesis" not in text, text[:2000]
    shot(page, "5-run-again-template")
    page.close()
