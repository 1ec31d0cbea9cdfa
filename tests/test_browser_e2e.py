"""The four journeys in a real browser (Playwright + Debian Chromium), app and worker running for real.

Upload sst2 → sentiment template → train the tiny model a few steps → progress reaches done →
results with parameter counts and the in-context comparison → a live prediction → the adapter zip
loads with PeftModel.from_pretrained. A second run reloads the page mid-training. Screenshots of
each page (1280×800) go to tests/artifacts/.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def upload_and_pick_template(page, csv: Path, check_inline_errors: bool = False) -> None:
    page.locator("input[type=file]").first.set_input_files(str(csv))
    page.get_by_text("32 rows").first.wait_for(timeout=30_000)
    page.get_by_text("rows to train on").first.wait_for(timeout=30_000)
    shot(page, "1_data")
    page.get_by_role("button", name="Save data and continue →").click()
    try:
        page.get_by_text("The template fits all").first.wait_for(timeout=30_000)
    except Exception:
        shot(page, "debug_saved")
        raise
    if check_inline_errors:  # a typo in a column name is reported inline, naming the file's columns
        box = page.get_by_role("textbox", name="Input template (what the model reads)")
        good = box.input_value()
        box.fill("{{review}} Is it good?")
        try:
            page.get_by_text(re.compile("column .review. used by the template is not in the file")).wait_for(
                timeout=30_000)
        except Exception:
            shot(page, "debug_template")
            raise
        shot(page, "2_template_error")
        box.fill(good)
        page.get_by_text("The template fits all").first.wait_for(timeout=30_000)
    shot(page, "2_template")
    page.get_by_role("button", name="Use this template and continue to training →").click()


def start_tiny_training(page, steps: int, batch: int = 4) -> None:
    page.get_by_text("Step 3 — train").wait_for(timeout=30_000)
    model = page.get_by_label("Model", exact=True)
    model.click()
    page.get_by_role("option", name=re.compile("Tiny demo model")).click()
    page.get_by_text("random weights").first.wait_for(timeout=120_000)  # the model notes; slow on a loaded machine
    page.get_by_text("Advanced: T-Few recipe settings").click()
    for label, value in (("Optimizer steps (T-Few: 1000)", steps), ("Examples per step (T-Few: 8)", batch),
                         ("Warm-up steps (empty: use the fraction)", 0), ("Checkpoint every N steps (0: never)", 0)):
        box = page.get_by_label(label)
        box.fill(str(value))
        box.press("Tab")
    page.get_by_text(f"for {steps} steps").first.wait_for(timeout=120_000)  # the estimate, for the new step count
    shot(page, "3_train")
    page.get_by_role("button", name="Start training").click()
    try:
        page.get_by_text(re.compile(r"Job #\d+: ")).first.wait_for(timeout=30_000)
    except Exception:
        shot(page, "debug_start")
        raise


def test_upload_train_watch_results_predict_download(app, browser, fewshot_dir, tmp_path):
    url, ctx = app
    page = browser.new_page(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page.goto(url)
    upload_and_pick_template(page, fewshot_dir / "sst2_16shot_seed0.csv", check_inline_errors=True)
    start_tiny_training(page, steps=6)
    page.get_by_text(re.compile(r"Job #\d+: succeeded")).wait_for(timeout=240_000)
    assert "job=" in page.url  # reopenable: the job id is in the address
    shot(page, "4_progress_done")

    page.get_by_role("button", name="See results →").click()
    page.get_by_text(re.compile(r"Results of job #\d+")).wait_for(timeout=60_000)
    page.get_by_text("(IA)³ parameters trained and added").wait_for(timeout=30_000)
    page.get_by_text("faster than in-context learning").wait_for(timeout=30_000)
    shot(page, "5_results")

    page.get_by_role("textbox", name="sentence", exact=True).fill("a gorgeous, witty, seductive movie.")
    page.get_by_role("button", name="Predict", exact=True).click()
    answer = page.locator("[data-testid=label-output-value]").first
    answer.wait_for(timeout=60_000)
    assert answer.inner_text().strip() in {"positive", "negative", "great", "terrible", "good", "bad"}
    page.get_by_role("textbox", name="sentence", exact=True).scroll_into_view_if_needed()
    shot(page, "6_prediction")

    with page.expect_download(timeout=60_000) as download_info:
        page.get_by_role("button", name=re.compile("Download adapter")).click()
    zip_path = tmp_path / "adapter.zip"
    download_info.value.save_as(zip_path)
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        assert {"adapter.safetensors", "ia3_config.json", "README.md", "results.json", "peft/adapter_config.json"} <= names
        zf.extractall(tmp_path / "unzipped")
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM

    base = AutoModelForSeq2SeqLM.from_pretrained(ctx.data_dir / "models" / "tiny-t0")
    model = PeftModel.from_pretrained(base, tmp_path / "unzipped" / "peft")
    assert any("ia3" in name for name, _ in model.named_parameters())
    page.close()


def test_reload_mid_training_still_sees_the_job_finish(app, browser, fewshot_dir):
    url, _ = app
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(url)
    upload_and_pick_template(page, fewshot_dir / "sst2_16shot_seed0.csv")
    start_tiny_training(page, steps=30, batch=2)
    page.get_by_text(re.compile(r"step \d+ / 30")).first.wait_for(timeout=120_000)
    job_url = page.url
    assert "job=" in job_url
    page.reload()
    page.get_by_text(re.compile(r"Job #\d+: (running|succeeded)")).first.wait_for(timeout=60_000)
    shot(page, "4_progress_after_reload")
    page.get_by_text(re.compile(r"Job #\d+: succeeded")).wait_for(timeout=400_000)
    page.get_by_role("button", name="See results →").wait_for(timeout=30_000)
    page.close()
