"""The results page's handlers, called directly: results without an evaluation, speed from the evaluation,
the "Try it" boxes in the template's order, and events that fill another page (keyed by its components)."""

from __future__ import annotations

from ia3app.templates.spec import TemplateSpec
from jobfactory import result as job_result
from ui import data_page as U
from ui import jobs_page as J
from ui import results_display as RD
from ui import results_page as R
from ui import template_page as T

from ui_calls import Req, SST2_HEAD, ctx, users, write  # noqa: F401  (the app context and two users)


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


def test_try_it_fields_follow_the_template_order():
    template = {"name": "nli", "input": "{{ premise }}\nQuestion: does it follow that {{ hypothesis }}? {{ aa }}",
                "label_column": "label", "choices": ["yes", "no"]}
    result = job_result(template=TemplateSpec.from_dict(template))
    assert RD.template_columns(result) == ["premise", "hypothesis", "aa"]
