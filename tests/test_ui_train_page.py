"""The train page's handlers, called directly: the recipe from the Advanced inputs, jobs submitted and seen by
their owner only, job configs refused in words, the model picker, and the time estimate a worker's probe
measures."""

from __future__ import annotations

import re

import pytest

from ia3app.config import RecipeConfig
from ia3app.errors import UserError
from ia3app.jobtypes import Holdout
from ia3app.templates.spec import TemplateSpec
from timing import finishes
from ui import data_page as U
from ui import jobs_page as J
from ui import owned_adapter as O
from ui import template_page as T
from ui import train_page as TR

from ui_calls import SST2_HEAD, ctx, users, write  # noqa: F401  (the app context and two users)


def test_advanced_inputs_build_the_recipe():
    defaults = RecipeConfig()
    values = [getattr(defaults, n) for n in TR.RECIPE_FIELDS]
    assert TR.recipe_from_values(values) == defaults
    values[TR.RECIPE_FIELDS.index("steps")] = 2.5
    with pytest.raises(UserError, match="whole number"):
        TR.recipe_from_values(values)


def submit_tiny_job(ctx, uid, tmp_path):
    from jobs import queue

    path = write(tmp_path, "reviews.csv", SST2_HEAD)
    state = U.save_upload(ctx, uid, path, "label", None, U.AUTO, None, 0.25, 0)
    spec = next(iter(T.fitting_templates(state.columns, state.label_values, "label").values()))
    recipe = RecipeConfig(steps=2, batch_size=2, warmup_steps=0, checkpoint_every=0)
    config = TR.build_job_config(ctx, uid, state, spec, "tiny-demo", "", recipe, False, "", TR.METHODS)
    return queue.submit(ctx.db(), uid, config), config


def test_submitted_job_is_visible_to_its_owner_only(ctx, users, tmp_path):
    alice, bob = users
    job_id, config = submit_tiny_job(ctx, alice, tmp_path)
    assert (ctx.data_dir / "models" / "tiny-t0" / "config.json").is_file()
    assert config.spec.eval_methods == TR.METHODS and config.data.holdout == Holdout(0.25, 0)
    assert config.spec.recipe.steps == 2 and config.labels.model == "tiny-demo"
    view = J.job_view(ctx, alice, job_id)
    assert view["found"] and view["status"] == "queued" and "Job #" in view["header"]
    assert not J.job_view(ctx, bob, job_id)["found"]
    assert J.job_choices(ctx, bob) == [] and len(J.jobs_table(ctx, alice)) == 1
    assert J.cancel_job(ctx, bob, job_id) == "No such job among yours."
    with pytest.raises(UserError, match="not one of your jobs"):
        O.build_zip(ctx, bob, job_id)
    with pytest.raises(UserError, match="not finished"):
        O.build_zip(ctx, alice, job_id)
    assert J.cancel_job(ctx, alice, job_id) == "Cancelled."


def test_job_config_refuses_someone_elses_dataset(ctx, users, tmp_path):
    alice, bob = users
    path = write(tmp_path, "reviews.csv", SST2_HEAD)
    state = U.save_upload(ctx, alice, path, "label", None, U.NONE, None, 0.25, 0)
    spec = next(iter(T.fitting_templates(state.columns, state.label_values, "label").values()))
    with pytest.raises(UserError, match="not found among your datasets"):
        TR.build_job_config(ctx, bob, state, spec, "tiny-demo", "", RecipeConfig(), False, "", [])


def test_submit_refuses_a_template_that_blows_up_only_on_the_held_out_file(ctx, users, tmp_path):
    """Issue 14: the training rows render fast, one held-out row hits the render time limit: refused
    before a job is queued, naming the file, the row and the limit."""

    train = write(tmp_path, "train.csv", "text,n,label\n" + "".join(f"t{i},0,{'ab'[i % 2]}\n" for i in range(8)))
    held = write(tmp_path, "held.csv", "text,n,label\n" + "".join(f"h{i},0,a\n" for i in range(40)) + "h,1000,b\n")
    state = U.save_upload(ctx, users[0], train, "label", None, U.SEPARATE, held, 0.25, 0)
    template = TemplateSpec.from_dict({
        "name": "cells", "input": "{% for i in range(n|int) %}{% for j in range(1000) %}"
        "{% for k in range(1000) %}{% endfor %}{% endfor %}{% endfor %}{{ text }}", "choices": ["a", "b"]})
    with pytest.raises(UserError, match=r"the held-out file, row 41: template refused: .*per-row time limit"):
        finishes(lambda: TR.build_job_config(ctx, users[0], state, template, "tiny-demo", "", RecipeConfig(), False,
                                             "", []), "the check of a held-out row of 10^9 loop iterations")


def test_tfew_vectors_only_for_t0_3b(ctx, users, tmp_path):
    path = write(tmp_path, "reviews.csv", SST2_HEAD)
    state = U.save_upload(ctx, users[0], path, "label", None, U.NONE, None, 0.25, 0)
    spec = next(iter(T.fitting_templates(state.columns, state.label_values, "label").values()))
    with pytest.raises(UserError, match="only for bigscience/T0_3B"):
        TR.build_job_config(ctx, users[0], state, spec, "google/flan-t5-small", "", RecipeConfig(), True,
                            "x.pt", [])


def test_default_model_fits_the_hardware():
    from ui import model_picker as M

    assert M.default_model(M.Hardware("cpu", "CPU", 0)) == M.BUNDLED  # everything loadable: the bundled real model
    assert M.default_model(M.Hardware("cuda", "H100", 80)) == M.BUNDLED
    hub = lambda key: key != M.BUNDLED  # noqa: E731  (the bundled package not installed)
    assert M.default_model(M.Hardware("cpu", "CPU", 0), hub) == "google/flan-t5-small"
    assert M.default_model(M.Hardware("cuda", "H100", 80), hub) == "bigscience/T0_3B"
    assert M.default_model(M.Hardware("cuda", "T4", 15), hub) == "google/flan-t5-base"


def test_time_estimate_scales_with_steps_and_reads_plainly():
    from ui import model_picker as M

    cpu = M.Hardware("cpu", "CPU", 0)
    one = M.estimate_seconds(7.7e7, 100, 8, 64, cpu)
    assert M.estimate_seconds(7.7e7, 1000, 8, 64, cpu) == pytest.approx(10 * one)
    assert M.format_duration(3) == "a few seconds" and M.format_duration(125) == "2 min 05 s"


def test_unreachable_hub_model_is_said_plainly(monkeypatch, ctx):
    from ui import model_picker as M

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = M.hub_status("google/flan-t5-small")
    if M.is_cached("google/flan-t5-small"):
        pytest.skip("google/flan-t5-small is downloaded on this machine")
    assert "not downloaded" in message and "tiny demo model" in message
    info = TR.model_info(ctx, "google/flan-t5-small", "", 1000, 8, 256, None, M.Hardware("cpu", "CPU", 0))
    assert "tiny demo model" in info and "Estimated training time" in info and "rough guide" in info


def test_local_model_folder_is_checked(ctx, tmp_path):
    from ui import model_picker as M

    with pytest.raises(UserError, match="no config.json"):
        M.resolve_model(M.LOCAL, str(tmp_path), ctx.data_dir)
    with pytest.raises(UserError, match="type the folder"):
        M.resolve_model(M.LOCAL, "", ctx.data_dir)


def test_offline_default_is_a_model_that_loads_and_start_says_why_not(monkeypatch, ctx, users, tmp_path):
    from ui import model_picker as M

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cpu = M.Hardware("cpu", "CPU", 0)
    assert M.default_model(cpu, M.can_load) == M.BUNDLED  # installed by make test; needs no hub
    assert M.default_model(cpu, lambda key: key != M.BUNDLED and M.can_load(key)) == (
        M.TINY if not M.is_cached("google/flan-t5-small") else "google/flan-t5-small")
    assert M.default_model(cpu, lambda key: False) == M.TINY
    if not M.is_cached("google/flan-t5-small"):
        assert "offline" in M.unusable_reason("google/flan-t5-small", "")
        info = TR.model_info(ctx, "google/flan-t5-small", "", 1000, 8, 256, None, cpu)
        assert "Start is off" in info
        state = U.save_upload(ctx, users[0], write(tmp_path, "r.csv", SST2_HEAD), "label", None, U.NONE, None, .25, 0)
        spec = next(iter(T.fitting_templates(state.columns, state.label_values, "label").values()))
        with pytest.raises(UserError, match="not downloaded"):
            TR.build_job_config(ctx, users[0], state, spec, "google/flan-t5-small", "", RecipeConfig(),
                                False, "", [])
    assert M.unusable_reason(M.TINY, "") is None
    assert "no config.json" in M.unusable_reason(M.LOCAL, str(tmp_path))


def test_estimate_is_measured_by_a_worker_probe_never_in_the_web_process(ctx, users, tmp_path):
    """The page asks; a real worker times steps of the tiny model; the estimate then weighs the data's tokens."""
    from jobs import probes
    from jobs.worker import Worker, WorkerConfig
    from storage import repo
    from ui import model_picker as M

    state = U.save_upload(ctx, users[0], write(tmp_path, "r.csv", SST2_HEAD), "label", None, U.NONE, None, .25, 0)
    spec = next(iter(T.fitting_templates(state.columns, state.label_values, "label").values()))
    rows = repo.load_rows(ctx.db(), ctx.files(), state.dataset_id, users[0])
    cpu = M.Hardware("cpu", "CPU", 0)
    args = (ctx, M.TINY, "", 100, 2, 64, rows, cpu)
    notes, text, pending = TR.info_and_pending(*args, template=spec)
    assert pending and "a worker is timing a few training steps" in text
    model = str(M.tiny_model_path(ctx.data_dir))
    probe = probes.latest(ctx.db(), model, RecipeConfig(batch_size=2))
    assert probe is not None and probe.status == "queued"
    from ui import time_estimate as T_E

    waited = T_E.estimate(ctx, M.TINY, model, RecipeConfig(steps=100, batch_size=2, max_length=64), rows, spec,
                          4e5, 64, cpu, ask=False, gave_up=True)  # no worker came: said, with the rough guide
    assert not waited.pending and "rough guide" in waited.source and "no worker has timed this model" in waited.source
    worker = Worker(WorkerConfig(ctx.data_dir, until_empty=True, device="cpu"))
    assert worker.run_probe() and not worker.run_probe()  # one probe asked, one run
    notes, text, pending = TR.info_and_pending(*args, template=spec, wait=True)
    assert not pending and "measured here from a short probe the worker ran" in text
    assert "s per step for your 12 rows" in text and "2 answer choices" in text and "tokens per padded batch of 2" in text
    def weighed(data):
        est = T_E.estimate(ctx, M.TINY, model, RecipeConfig(steps=100, batch_size=2, max_length=256), data, spec,
                           None, 64, cpu)
        return est.seconds, int(re.search(r"([\d,]+) tokens per padded batch", est.source).group(1).replace(",", ""))

    longer = [{**r, "sentence": r["sentence"] * 20} for r in rows]  # 20× the tokens per row: a heavier step
    (short_s, short_tokens), (long_s, long_tokens) = weighed(rows), weighed(longer)
    assert long_tokens > 3 * short_tokens and long_s >= short_s  # (cut at 256 tokens) the costs are never negative
    alone = T_E.estimate(ctx, M.TINY, model, RecipeConfig(steps=100, batch_size=2, max_length=64), rows, spec, None,
                         64, cpu)  # nothing held out: loading + training, said so
    assert alone.parts.evaluate_s == 0 and "(no evaluation: no held-out rows" in T_E.describe(alone, 100)
    held_out = rows[:4]  # evaluation is its own term: loading + training + evaluating the held-out rows
    est = T_E.estimate(ctx, M.TINY, model, RecipeConfig(steps=100, batch_size=2, max_length=64), rows, spec, None,
                       64, cpu, eval_rows=held_out, methods=["zero-shot", "in-context", "t-few"])
    assert est.parts is not None and est.parts.held_out == 4 and est.parts.evaluate_s > 0 and est.parts.load_s > 0
    assert est.seconds == pytest.approx(est.parts.load_s + est.parts.train_s + est.parts.evaluate_s)
    text = T_E.describe(est, 100)
    assert "for 100 steps and the evaluation" in text and "zero-shot, in-context and T-Few on 4 held-out rows" in text
    fewer = T_E.estimate(ctx, M.TINY, model, RecipeConfig(steps=100, batch_size=2, max_length=64), rows, spec, None,
                         64, cpu, eval_rows=held_out, methods=["t-few"])
    assert fewer.parts.evaluate_s < est.parts.evaluate_s  # in-context's long prompts and a third method cost more


@pytest.mark.parametrize("typed, words", [
    ("LOOP", "cannot be followed (Symlink loop"),
    ("LOOP/sub", "cannot be followed"),
    ("x" * 5000, "the folder path is 5,000 characters long"),
    ("models/a\x00b", "contains a NUL character"),
])
def test_a_strange_model_folder_is_refused_in_words(tmp_path, typed, words):
    """Issue 22 item 5: a symlink loop, 5,000 characters or a NUL in the model folder field gave an empty
    'Error' toast (RuntimeError / OSError / ValueError); the picker and Start now say what is wrong."""
    from ui import model_picker as M

    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    typed = typed.replace("LOOP", str(loop))
    for allowed in (None, [tmp_path]):
        assert words in M.unusable_reason(M.LOCAL, typed, allowed)
        with pytest.raises(UserError, match=re.escape(words)):
            M.resolve_model(M.LOCAL, typed, tmp_path, allowed)
