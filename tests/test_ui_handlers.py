"""Web app handlers called directly: launch policy, upload checks, templates, jobs, ownership."""

from __future__ import annotations

import re

import pytest

from ia3app.config import RecipeConfig
from ia3app.jobtypes import DataRef, Holdout
from ia3app.templates.spec import TemplateSpec
from jobfactory import result as job_result
from ia3app.errors import UserError
from ui import jobs_page as J
from ui import owned_adapter as O
from ui import results_display as RD
from ui import results_page as R
from ui import template_page as T
from timing import finishes
from ui import train_page as TR
from ui import data_page as U
from ui.auth import decide_auth
from ui.context import AppContext

SST2_HEAD = "sentence,label\n" + "".join(
    f"{'a fine film' if i % 2 else 'a dull mess'} number {i},{'positive' if i % 2 else 'negative'}\n" for i in range(12)
)


class Req:
    """What the handlers read from gr.Request: the signed-in name and the query string."""

    def __init__(self, username=None):
        self.username = username
        self.query_params = {}


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    monkeypatch.setenv("IA3APP_DATA_DIR", str(tmp_path / "data"))
    return AppContext(tmp_path / "data", max_upload_bytes=20_000, max_rows=50)


@pytest.fixture
def users(ctx):
    from storage import users

    return users.create_user(ctx.db(), "alice", "correct horse 1"), users.create_user(ctx.db(), "bob", "battery 22")


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


# ---- launch policy -----------------------------------------------------------------------------
def test_local_host_needs_no_sign_in():
    assert decide_auth("127.0.0.1", user_count=0).required is False


def test_public_host_refuses_without_users():
    with pytest.raises(UserError, match="storage.users add"):
        decide_auth("0.0.0.0", user_count=0)


def test_public_host_requires_sign_in_when_users_exist():
    assert decide_auth("0.0.0.0", user_count=1).required is True
    assert decide_auth("127.0.0.1", user_count=1, force_auth=True).required is True


def test_insecure_flag_warns():
    policy = decide_auth("0.0.0.0", user_count=0, insecure_no_auth=True)
    assert policy.required is False and "WITHOUT authentication" in policy.warning


def test_main_exits_with_a_message_when_public_and_no_users(tmp_path, capsys, monkeypatch):
    from ui.main import main

    monkeypatch.setenv("IA3APP_DATA_DIR", str(tmp_path / "d"))  # main() exports it; restored afterwards
    with pytest.raises(SystemExit) as exc:
        main(["--host", "0.0.0.0", "--data-dir", str(tmp_path / "d"), "--no-worker"])
    assert exc.value.code == 2
    assert "no users exist" in capsys.readouterr().err


def test_signed_in_mode_rejects_anonymous_requests(ctx, users):
    ctx.auth_required = True
    with pytest.raises(UserError, match="sign in"):
        ctx.user_id(Req())
    assert ctx.user_id(Req("bob")) == users[1]


# ---- upload ------------------------------------------------------------------------------------
def count_datasets(ctx):
    return ctx.db().execute("select count(*) from datasets").fetchone()[0]


def test_upload_saves_training_data_with_an_automatic_split(ctx, users, tmp_path):
    path = write(tmp_path, "reviews.csv", SST2_HEAD)
    info = U.describe_file(path, ctx)
    assert info["columns"] == ["sentence", "label"] and info["label_column"] == "label"
    state = U.save_upload(ctx, users[0], path, "label", None, U.AUTO, None, 0.25, 0)
    assert state.holdout == Holdout(0.25, 0) and state.label_values == ["negative", "positive"]
    assert state.data_ref() == DataRef(state.dataset_id, None, Holdout(0.25, 0))
    assert "8 rows to train on, 4 held out" in U.split_summary(U.parse(path, ctx).rows, "label", 0.25, 0)
    assert count_datasets(ctx) == 1


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"\x00\x01\x02PK\x03\x04" * 50, "binary|not a text"),
    ("sentence,label\n" + "x,a\n" * 60, "row limit|limit"),
    ("sentence,label\nx,a\ny,\n", "blank"),
    ("sentence,label\nx,a\ny,a\n", "at least two"),
    ("s" * 30_000, "MB; the limit is"),
])
def test_bad_files_get_a_specific_message_and_nothing_is_stored(ctx, users, tmp_path, content, message):
    path = write(tmp_path, "bad.csv", content)
    with pytest.raises(UserError, match=message):
        U.save_upload(ctx, users[0], path, "label", None, U.NONE, None, 0.25, 0)
    assert count_datasets(ctx) == 0
    uploads = ctx.data_dir / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


def test_bad_held_out_file_stores_nothing(ctx, users, tmp_path):
    good = write(tmp_path, "train.csv", SST2_HEAD)
    bad = write(tmp_path, "held.csv", "review,label\nx,positive\n")
    with pytest.raises(UserError, match="held-out file lacks column"):
        U.save_upload(ctx, users[0], good, "label", None, U.SEPARATE, bad, 0.25, 0)
    assert count_datasets(ctx) == 0


# ---- template ----------------------------------------------------------------------------------
def test_builtin_template_previews_with_the_correct_choice_marked():
    rows = [{"sentence": "great <b>fun</b>", "label": "positive"}, {"sentence": "awful", "label": "negative"}]
    fitting = T.fitting_templates(["sentence", "label"], ["negative", "positive"], "label")
    name = next(iter(fitting))
    fields = T.fields_from_spec(fitting[name])
    message, html, spec = T.check_template(rows, ["sentence", "label"], "label", name, *fields)
    assert message.startswith("✓") and isinstance(spec, TemplateSpec) and spec.name == name
    assert "&lt;b&gt;fun&lt;/b&gt;" in html  # user text is escaped
    assert html.count('class="correct"') == 2


def test_template_errors_are_shown_inline():
    rows = [{"sentence": "x", "label": "positive"}]
    message, html, spec = T.check_template(rows, ["sentence", "label"], "label", "mine", "{{review}} ok?", T.FIXED,
                                           "yes\nno", "", "")
    assert spec is None and "column 'review'" in message and "sentence" in message


def test_label_map_lines_are_parsed():
    spec = T.spec_from_fields("m", "{{s}}", T.FIXED, "bad\ngood", "0 = bad\n1 = good", "", "label")
    assert spec.label_map == {"0": "bad", "1": "good"}
    with pytest.raises(UserError, match="label value = answer"):
        T.spec_from_fields("m", "{{s}}", T.FIXED, "bad\ngood", "0 bad", "", "label")


# ---- train + jobs ------------------------------------------------------------------------------
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


# ---- model picker ------------------------------------------------------------------------------
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


@pytest.mark.parametrize("name", ["sst2_16shot_seed0.csv", "rte_32shot_seed0.csv", "copa_32shot_seed0.csv"])
def test_shared_files_upload_and_get_a_fitting_template(ctx, users, fewshot_dir, name):
    from storage import repo

    path = str(fewshot_dir / name)
    info = U.describe_file(path, ctx)
    state = U.save_upload(ctx, users[0], path, info["label_column"], None, U.AUTO, None, 0.25, 0)
    fitting = T.fitting_templates(state.columns, state.label_values, state.label_column)
    assert fitting, f"no built-in fits {name}"
    spec = next(iter(fitting.values()))
    rows = repo.load_rows(ctx.db(), ctx.files(), state.dataset_id, users[0])
    message, html, checked = T.check_template(rows, state.columns, state.label_column, spec.name,
                                              *T.fields_from_spec(spec))
    assert checked is not None, message
    assert html.count('class="correct"') == 4  # four preview rows, each with its answer marked


def test_chosen_text_columns_drive_the_built_ins(ctx, users, tmp_path):
    path = write(tmp_path, "mixed.csv", "id,review,stars\n" + "".join(
        f"{i},{'great' if i % 2 else 'awful'} film {i},{'positive' if i % 2 else 'negative'}\n" for i in range(8)))
    state = U.save_upload(ctx, users[0], path, "stars", None, U.NONE, None, 0.25, 0, ["review"])
    assert state.text_columns == ["review"]
    fitting = T.fitting_templates(state.text_columns + ["stars"], state.label_values, "stars")
    assert fitting and all("id" not in spec.columns_used() for spec in fitting.values())
    with pytest.raises(UserError, match="at least one text column"):
        U.save_upload(ctx, users[0], path, "stars", None, U.NONE, None, 0.25, 0, ["stars"])


def test_results_without_evaluation_still_render():
    result = job_result(params={"base": 1000, "added": 10, "fraction": 0.01, "adapter_bytes": 200}, evaluation=None)
    assert RD.metrics_frame(result).empty and RD.confusion_figure(result) is None
    assert "appears when the job evaluated both" in RD.speed_md(result)
    assert "**10**" in RD.params_md(result) and "1.0000%" in RD.params_md(result) and "20× smaller" in RD.params_md(result)


def test_speed_numbers_come_from_the_evaluation():
    methods = {
        "in-context": {"accuracy": 0.5, "macro_f1": 0.4, "n": 8, "latency_s": 0.5, "flops": 2e9, "tokens": 900,
                       "shots": 16, "confusion_matrix": [[2, 2], [2, 2]], "labels": ["a", "b"], "per_class": []},
        "t-few": {"accuracy": 0.75, "macro_f1": 0.7, "n": 8, "latency_s": 0.05, "flops": 1e8, "tokens": 50,
                  "confusion_matrix": [[3, 1], [1, 3]], "labels": ["a", "b"], "per_class": []},
    }
    result = job_result(evaluation={"methods": methods,
                                    "ratios": {"in-context / t-few": {"latency_s": 10.0, "flops": 20.0, "tokens": 18}}})
    text = RD.speed_md(result)
    assert "10.0× faster" in text and "20.0× fewer FLOPs" in text and "16 examples" in text
    frame = RD.metrics_frame(result)
    assert list(frame["accuracy"]) == ["50.0%", "75.0%"]
    assert RD.confusion_figure(result) is not None


def test_events_that_fill_another_page_return_updates_keyed_by_its_components(ctx, users, tmp_path):
    import gradio as gr

    from ui.shared import Shared

    with gr.Blocks() as demo:
        with gr.Tabs() as tabs:
            tp, jp, rp = T.build_template_page(), J.build_job_page(), R.build_results_page()
        shared = Shared(demo, tabs, gr.State({}), gr.State(None), gr.State([]), gr.State(None))
    state = U.save_upload(ctx, users[0], write(tmp_path, "reviews.csv", SST2_HEAD), "label", None, U.NONE, None,
                          0.25, 0)
    names, filled = T.suggest(tp, state)
    assert names and set(filled) == set(tp.suggested) == {tp.builtin, tp.shape, tp.insert, *tp.editor, tp.also}
    assert filled[tp.also]["choices"] == names[1:]  # the other fitting built-ins, to train with too
    assert filled[tp.name] == names[0] and "sentence" in filled[tp.input]
    opened = J.open_job(jp, ctx, users[0], 7, shared)
    assert opened[jp.job]["value"] == 7 and set(opened) == {shared.tabs, jp.job}
    refused = R.open_results(rp, ctx, Req("bob"), 7, shared)
    assert "not one of your jobs" in refused[rp.header]
    assert set(refused) <= {shared.results_job, shared.tabs, *R.filled_by_open(rp)}


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


def test_several_templates_can_be_ticked_for_training(ctx, users, tmp_path):
    state = U.save_upload(ctx, users[0], write(tmp_path, "r.csv", SST2_HEAD), "label", None, U.NONE, None, .25, 0)
    fitting = T.fitting_templates(state.columns, state.label_values, "label")
    primary, *others = list(fitting)
    assert others, "the sst2-shaped file should fit more than one built-in"
    extra = T.train_templates(state, [primary, *others, "no-such-template"], fitting[primary])
    assert [t.name for t in extra] == others  # the primary and unknown names are not doubled in
    config = TR.build_job_config(ctx, users[0], state, fitting[primary], "tiny-demo", "", RecipeConfig(),
                                 False, "", [], extra)
    assert [t.name for t in config.spec.train_templates] == others
    assert config.labels.template == f"{primary} + {len(others)} more for training"


def test_try_it_fields_follow_the_template_order():
    template = {"name": "nli", "input": "{{ premise }}\nQuestion: does it follow that {{ hypothesis }}? {{ aa }}",
                "label_column": "label", "choices": ["yes", "no"]}
    result = job_result(template=TemplateSpec.from_dict(template))
    assert RD.template_columns(result) == ["premise", "hypothesis", "aa"]


def test_header_names_the_signed_in_user_with_a_way_out(ctx):
    import gradio as gr

    from ui.app_layout import _account

    with gr.Blocks():
        who, out = gr.Markdown(), gr.Button("Sign out", link="/logout")
    shown = _account(ctx, Req("<b>alice</b>"), who, out)
    assert shown[who] == "Signed in as **&lt;b&gt;alice&lt;/b&gt;**" and shown[out]["visible"] is True
    assert "Single-user mode" in _account(ctx, Req(), who, out)[who]
    ctx.auth_required = True
    assert _account(ctx, Req(), who, out)[out]["visible"] is False


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
