"""The template step in a real browser for a multiple-choice file: the data page names the shape, the
multiple-choice built-in is offered (not sentiment), a click on a column inserts it into the template,
and '(write my own)' gives the template a new name. Screenshots go to tests/artifacts/."""

from __future__ import annotations

from pathlib import Path

import pytest
from apps import VIEW
from test_browser_e2e import shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]
DATA = Path(__file__).parent / "data"


def test_multiple_choice_file_in_the_browser(app, browser):
    url, _ = app
    page = browser.new_page(viewport=VIEW)
    page.goto(url)
    page.locator("input[type=file]").first.set_input_files(str(DATA / "winogrande_like.csv"))
    page.get_by_text("16 rows").first.wait_for(timeout=30_000)
    page.get_by_text("The model will read: multiple choice").first.wait_for(timeout=30_000)
    shot(page, "shape_1_data")
    page.get_by_role("button", name="Save data and continue →").click()
    page.get_by_text("The template fits all 16 rows").first.wait_for(timeout=30_000)
    page.get_by_text("Your data: multiple choice").first.wait_for(timeout=10_000)
    assert page.get_by_label("Template name").input_value() == "multiple_choice"
    per_row = page.get_by_label("Per-row answers, one per line", exact=False)
    assert per_row.input_value().splitlines() == ["1 = {{ option1 }}", "2 = {{ option2 }}"]
    shot(page, "shape_2_template")
    editor = page.get_by_label("Input template (what the model reads)")
    editor.fill("Fill the blank:")
    page.get_by_role("radio", name="sentence").click()
    page.wait_for_function("() => [...document.querySelectorAll('textarea')].some("
                           "t => t.value === 'Fill the blank: {{ sentence }}')", timeout=10_000)
    page.get_by_text("The template fits all 16 rows").first.wait_for(timeout=30_000)
    page.get_by_label("Built-in templates that fit your columns").click()
    page.get_by_role("option", name="(write my own)").click()
    page.wait_for_function("() => [...document.querySelectorAll('textarea')].some(t => t.value === 'my-template')",
                           timeout=10_000)
    shot(page, "shape_3_own_template")
