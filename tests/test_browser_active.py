"""Issue 20 in a real browser (Playwright + Debian Chromium), app and worker running for real: on the
"Label next" page, pick a finished run, upload unlabelled rows, ask for 4 suggestions (a suggest job the
worker runs), label three and skip one, save them (a new dataset version), and start the next round,
which opens on the Progress page. Screenshots go to /work/notes/screens/active20-*.png when that folder
exists, else tests/artifacts/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTES = Path("/work/notes/screens")
ARTIFACTS = NOTES if NOTES.is_dir() else Path(__file__).resolve().parent / "artifacts"
ROOT = Path(__file__).resolve().parent.parent


def shot(page, name: str, full: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"active20-{name}.png"), full_page=full)


def first_round(ctx, tmp_path, wait_for) -> int:
    """A finished run of the tiny model on SST-2's 32 rows (set up through the page handlers, run by the worker)."""
    from ia3app.config import RecipeConfig
    from jobs import queue
    from storage import users
    from ui import data_page as U
    from ui import template_page as T
    from ui import train_page as TR

    uid = users.ensure_local_user(ctx.db())
    path = tmp_path / "sst2.csv"
    path.write_bytes((ROOT / "examples" / "sst2_16shot_seed0.csv").read_bytes())
    state = U.save_upload(ctx, uid, str(path), "label", None, U.AUTO, None, 0.25, 0)
    spec = next(iter(T.fitting_templates(state.columns, state.label_values, "label").values()))
    recipe = RecipeConfig(steps=2, batch_size=2, warmup_steps=0, checkpoint_every=0)
    config = TR.build_job_config(ctx, uid, state, spec, "tiny-demo", "", recipe, False, "", ["t-few"])
    job_id = queue.submit(ctx.db(), uid, config)
    wait_for(lambda: queue.get_job(ctx.db(), job_id, uid).status in queue.TERMINAL, "the first round", 600)
    assert queue.get_job(ctx.db(), job_id, uid).status == "succeeded"
    return job_id


def test_one_round_suggest_label_save_retrain(app, browser, tmp_path, wait_for):
    from ia3app import tables
    from jobs import queue
    from storage import repo, users

    url, ctx = app
    job_id = first_round(ctx, tmp_path, wait_for)
    source = tables.load_csv((ROOT / "examples" / "sst2_16shot_seed42.csv").read_bytes())
    pool = tmp_path / "unlabelled.csv"
    pool.write_bytes(tables.write_csv([{"sentence": r["sentence"], "label": ""} for r in source.rows],
                                      ["sentence", "label"]))
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        page.goto(url)
        page.get_by_role("tab", name="6 · Label next").click()
        page.get_by_label("Finished run (its adapter scores the pool)").click()
        page.get_by_role("option", name=re.compile(f"#{job_id} ")).click()
        page.locator("#ia3-pool-file input[type=file]").set_input_files(str(pool))
        page.locator("#ia3-pool-upload").click()
        page.get_by_text(re.compile(r"Unlabelled pool #\d+ stored")).wait_for(timeout=60_000)
        n = page.get_by_label(re.compile("Rows to suggest"))
        n.fill("4")
        n.press("Tab")
        page.locator("#ia3-suggest").click()
        page.get_by_text(re.compile(r"4 rows to label, picked from 32 unlabelled rows")).wait_for(timeout=300_000)
        page.get_by_text("Label for pool row").first.wait_for(timeout=30_000)
        shot(page, "1_suggestions", full=True)

        for i, label in enumerate(["positive", "negative", "positive", "skip"]):
            picker = page.locator(f"#ia3-pick-{i}")
            picker.locator("input").click()
            picker.get_by_role("option", name=label, exact=True).click()
            page.locator(f"#ia3-pick-{i} input").evaluate("e => e.blur()")
        page.locator("#ia3-save-labels").click()
        page.get_by_text(re.compile(r"Saved 3 labelled rows as dataset #\d+ \(a new version")).wait_for(
            timeout=60_000)
        page.locator("#ia3-rounds").get_by_test_id("cell-1-2").get_by_text("not trained yet").wait_for(
            timeout=30_000)  # the rounds table shows the new version, not trained yet
        shot(page, "2_saved", full=True)

        page.locator("#ia3-retrain").click()
        page.get_by_text(re.compile(r"Job #\d+: (queued|running|succeeded)")).first.wait_for(timeout=60_000)
        shot(page, "3_next_round_started")
    except Exception:
        shot(page, "debug", full=True)
        raise
    finally:
        page.close()

    uid = users.ensure_local_user(ctx.db())
    jobs = queue.list_jobs(ctx.db(), uid)
    newest = jobs[0]
    assert newest.id != job_id and newest.request.spec.init_adapter is None  # fresh start: the default (measured better)
    first_dataset = queue.get_job(ctx.db(), job_id, uid).request.data.dataset_id
    assert len(repo.load_rows(ctx.db(), ctx.files(), newest.request.data.dataset_id, uid)) == \
        len(repo.load_rows(ctx.db(), ctx.files(), first_dataset, uid)) + 3  # the old version is unchanged
    assert sum(1 for v in repo.pool_marks(ctx.db(), repo.list_datasets(ctx.db(), uid, kind="pool")[0].id,
                                          uid).values() if v is None) == 1
