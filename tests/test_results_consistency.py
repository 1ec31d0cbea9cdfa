"""Results read the same everywhere: the data's own label numbering in predictions and their CSV
columns, the user's labels beside the answer words in matrices, latency from several timed runs."""

from __future__ import annotations

from ia3app.serving.bank import AdapterInfo
from ia3app.serving.engine import prediction_table
from ia3app.serving.lane import Prediction, label_for_choice
from ia3app.templates.spec import TemplateSpec
from jobfactory import result as job_result
from ui import results_display as R


def info(template: TemplateSpec, choices: list[str]) -> AdapterInfo:
    return AdapterInfo(key=(), path="", base_model="m", revision=None, template=template, choices=choices,
                       max_length=64, config={}, nbytes=0)


def test_per_row_predictions_and_probability_columns_share_one_numbering():
    zero_based = TemplateSpec(name="copa", input="{{premise}}", label_column="label",
                              choice_templates=["{{choice1}}", "{{choice2}}"])
    one_based = TemplateSpec(name="copa", input="{{premise}}", label_column="label",
                             choice_templates=["{{choice1}}", "{{choice2}}"], choice_labels=["1", "2"])
    for spec, labels in ((zero_based, [0, 1]), (one_based, ["1", "2"])):
        meta = info(spec, ["choice 1", "choice 2"])
        pred = Prediction(label=label_for_choice(meta, 1, "it rained"), choice="it rained",
                          probabilities={"it was sunny": 0.3, "it rained": 0.7}, scores=[-2.0, -1.0])
        columns, rows = prediction_table(meta, ["premise"], [{"premise": "wet"}], [pred])
        assert columns[-4:] == [f"prob_{label}" for label in labels] + ["confidence", "best_guess"]
        assert rows[0]["prediction"] == labels[1] and rows[0][f"prob_{labels[1]}"] == "0.700000"
        assert rows[0]["confidence"] == "0.700000" and rows[0]["best_guess"] == labels[1]


def test_matrices_show_the_users_labels_beside_the_answer_words():
    def shown(answers, **template):
        return R.label_display(job_result(template=TemplateSpec(label_column="label", **template)), answers)

    assert shown(["bad", "good"], name="s", input="{{s}}", choices=["bad", "good"],
                 label_map={"0": "bad", "1": "good"}) == ["0 (bad)", "1 (good)"]
    assert shown(["neg", "pos"], name="s", input="{{s}}", choices=["neg", "pos"]) == ["neg", "pos"]  # labels = answers
    assert shown(["choice 1", "choice 2"], name="c", input="{{p}}", choice_templates=["{{a}}", "{{b}}"],
                 choice_labels=["1", "2"]) == ["1 (choice 1)", "2 (choice 2)"]
    assert shown(["choice 1", "choice 2"], name="c", input="{{p}}",
                 choice_templates=["{{a}}", "{{b}}"]) == ["0 (choice 1)", "1 (choice 2)"]


def test_latency_is_the_median_of_several_timed_runs(tiny_model_dir):
    from ia3app.evaluation.compare import LATENCY_RUNS, _timed_scores
    from ia3app.backbones.loading import load_model
    from ia3app.templates.rendering import render_all

    loaded = load_model(str(tiny_model_dir("t0")))
    spec = TemplateSpec(name="s", input="{{s}} good?", label_column="label", choices=["no", "yes"])
    examples = render_all(spec, [{"s": f"row {i}", "label": "yes"} for i in range(5)])
    scored, latency = _timed_scores(loaded, examples, batch_size=2, max_length=32, warmup=False)
    assert LATENCY_RUNS >= 3 and len(scored) == 5 and latency > 0
    methods = {k: {"latency_s": 0.01, "flops": 1.0, "latency_runs": LATENCY_RUNS, "shots": 4}
               for k in ("in-context", "t-few")}
    text = R.speed_md(job_result(evaluation={"methods": methods,
                                             "ratios": {"in-context / t-few": {"latency_s": 1.0, "flops": 1.0}}}))
    assert f"median of {LATENCY_RUNS} timed runs" in text
