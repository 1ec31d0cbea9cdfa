"""Issue 19 end to end on the tiny model: cross-validation as one job, calibration stored with the
adapter and applied when serving, the abstain threshold, the plots beside the model card."""

import csv
import re
import io
import json

import pytest

from ia3app.config import RecipeConfig
from ia3app.errors import UserError
from ia3app.jobtypes import DataRef, Holdout, JobRequest, JobResult, JobSpec, dumps, loads
from ia3app.templates.spec import TemplateSpec

TEMPLATE = TemplateSpec(name="sentiment", input="Review: {{ text }} Is it good or bad?",
                        choices=["bad", "good"], label_map={"0": "bad", "1": "good"}, label_column="label")


def _rows(n, offset=0):
    words = ["awful", "great"]
    return [{"text": f"film {i + offset} was {words[i % 2]}", "label": str(i % 2)} for i in range(n)]


def _spec(tiny_model_dir, **kw):
    return JobSpec(model=str(tiny_model_dir("t0")), template=TEMPLATE,
                   recipe=RecipeConfig(steps=2, batch_size=2, warmup_steps=1, checkpoint_every=1), **kw)


def test_cv_folds_are_checked():
    with pytest.raises(UserError, match="cv_folds"):
        JobSpec(model="m", template=TEMPLATE, cv_folds=1)
    with pytest.raises(UserError, match="cv_folds"):
        JobSpec(model="m", template=TEMPLATE, cv_folds=11)
    spec = JobSpec(model="m", template=TEMPLATE, cv_folds=4)
    assert JobSpec.from_dict(spec.to_dict()).cv_folds == 4
    assert "cv_folds" not in JobSpec(model="m", template=TEMPLATE).to_dict()  # stored specs keep their shape
    with pytest.raises(UserError, match="cross-validation or on held-out rows"):
        JobRequest(spec=spec, data=DataRef(1, holdout=Holdout(0.25)))


def test_stratified_folds():
    from ia3app.tables import stratified_folds

    rows = [{"label": "a"}] * 6 + [{"label": "b"}] * 3
    folds = stratified_folds(rows, "label", 3)
    assert sorted(folds.count(f) for f in range(3)) == [3, 3, 3]
    assert all({folds[i] for i in range(6)} == {0, 1, 2} for _ in [0])  # each fold holds out some "a"
    assert {folds[i] for i in range(6, 9)} == {0, 1, 2}  # and one "b"
    assert folds == stratified_folds(rows, "label", 3)  # seeded
    with pytest.raises(UserError, match="at least 8 labelled rows"):
        stratified_folds(rows[:5], "label", 4)


def test_cross_validation_job_trains_k_plus_one_runs_and_resumes(tiny_model_dir, tmp_path):
    from ia3app.adapters.files import load_adapter
    from ia3app.recipe.run_job import run_job

    spec = _spec(tiny_model_dir, cv_folds=3)
    events = []
    out = tmp_path / "adapter"
    result = run_job(spec, _rows(9), None, work_dir=tmp_path / "work", out_dir=out, progress=events.append)
    messages = [e.message or "" for e in events]
    for i in (1, 2, 3):
        assert any(m.startswith(f"fold {i}/3: step 2/2") for m in messages), messages
    assert any(m.startswith("final run 4/4: step 2/2") for m in messages)
    evaluation = result.evaluation
    folds = evaluation["folds"]
    assert [f["fold"] for f in folds] == [1, 2, 3] and sum(f["n"] for f in folds) == 9
    assert sorted(evaluation["gold"]) == sorted(int(r["label"]) for r in _rows(9))  # every row held out once
    tfew = result.method("t-few")
    assert tfew["n"] == 9 and len(tfew["predictions"]) == 9 and tfew["intervals"]["accuracy"]["n"] == 9
    assert set(evaluation["differences"]) == {"t-few − in-context", "t-few − zero-shot"}
    assert evaluation["calibration"]["source"] == "cross-validation" and evaluation["calibration"]["n"] == 9
    assert result.num_eval == 9 and result.num_train == 9 and result.training.steps == 2
    assert loads(JobResult, dumps(result)) == result
    _, config = load_adapter(out)
    assert config["calibration"]["temperature"] == pytest.approx(evaluation["calibration"]["temperature"])
    assert config["abstain_threshold"] is None
    plots = {p.name for p in (out / "plots").iterdir()}
    assert {"confusion_matrices.png", "reliability_diagram.png", "coverage_curve.png", "fold_spread.png",
            "loss_curve.png", "accuracy_intervals.png"} <= plots
    card = (out / "README.md").read_text()
    assert "3-fold cross-validation" in card and "95 % CI" in card and "plots/fold_spread.png" in card

    # a rerun resumes: finished folds are read back, the final run continues from its checkpoint
    again_events = []
    again = run_job(spec, _rows(9), None, work_dir=tmp_path / "work", out_dir=out, progress=again_events.append)
    assert sum("already done (resumed)" in (e.message or "") for e in again_events) == 3
    assert not any(e.phase == "train" and e.step for e in again_events)
    assert again.training.resumed_from_step == 2
    assert again.evaluation["folds"] == folds


def test_cross_validation_refuses_too_few_rows(tiny_model_dir, tmp_path):
    from ia3app.recipe.run_job import run_job

    with pytest.raises(UserError, match="5-fold cross-validation needs at least 10"):
        run_job(_spec(tiny_model_dir, cv_folds=5), _rows(8), None, work_dir=tmp_path / "w", out_dir=tmp_path / "o",
                progress=lambda e: None)


@pytest.fixture(scope="module")
def trained_adapter(tiny_model_dir, tmp_path_factory):
    from ia3app.recipe.run_job import run_job

    tmp = tmp_path_factory.mktemp("trust")
    out = tmp / "adapter"
    result = run_job(_spec(tiny_model_dir), _rows(6), _rows(8, 100), work_dir=tmp / "work", out_dir=out,
                     progress=lambda e: None)
    return out, result


def test_held_out_job_reports_intervals_differences_and_calibration(trained_adapter):
    out, result = trained_adapter
    evaluation = result.evaluation
    assert evaluation["gold"] == [int(r["label"]) for r in _rows(8, 100)]
    for method in ("zero-shot", "in-context", "t-few"):
        ci = result.method(method)["intervals"]["accuracy"]
        assert ci["low"] <= result.method(method)["accuracy"] <= ci["high"] and ci["n"] == 8
    diff = evaluation["differences"]["t-few − in-context"]["accuracy"]
    assert diff["verdict"] in ("T-Few is better", "in-context is better", "no clear difference")
    assert diff["difference"] == pytest.approx(result.method("t-few")["accuracy"] - result.method("in-context")["accuracy"])
    cal = evaluation["calibration"]
    assert cal["source"] == "held-out" and cal["temperature"] > 0 and cal["coverage"][-1]["coverage"] == 1.0


def test_serving_applies_the_temperature_and_the_threshold(trained_adapter, tmp_path):
    import shutil

    from ia3app.adapters.files import set_abstain_threshold
    from ia3app.evaluation.calibration import apply_temperature
    from ia3app.serving.engine import ServingEngine

    folder = tmp_path / "a"
    shutil.copytree(trained_adapter[0], folder)
    config_path = folder / "ia3_config.json"
    config = json.loads(config_path.read_text())
    rows = _rows(4, 200)
    engine = ServingEngine(device="cpu")
    try:
        config["calibration"]["temperature"] = 1.0
        config_path.write_text(json.dumps(config))
        raw = engine.predict(folder, rows)
        config["calibration"]["temperature"] = 3.0
        config_path.write_text(json.dumps(config))
        hot = engine.predict(folder, rows)
        for r, h in zip(raw, hot):
            assert list(h.probabilities.values()) == pytest.approx(
                apply_temperature([list(r.probabilities.values())], 3.0)[0], abs=1e-6)
            assert h.choice == r.choice and not h.unsure
            assert h.as_dict()["unsure"] is False and h.as_dict()["confidence"] == pytest.approx(h.confidence)

        set_abstain_threshold(folder, 0.999)  # the tiny model is never this sure
        assert json.loads(config_path.read_text())["calibration"]["temperature"] == 3.0  # other keys kept
        unsure = engine.predict(folder, rows)
        assert all(p.unsure for p in unsure)
        d = unsure[0].as_dict()
        assert d["label"] == "unsure" and d["choice"] is None and d["unsure"] is True
        assert d["best_guess"] == {"label": unsure[0].label, "choice": unsure[0].choice}
        table = list(csv.DictReader(io.StringIO(engine.predict_csv(folder, b"text\nfine film\nbad film\n").decode())))
        assert [r["prediction"] for r in table] == ["unsure", "unsure"]
        assert all(r["predicted_choice"] == "" and r["best_guess"] in ("0", "1") for r in table)
        assert all(0 < float(r["confidence"]) < 0.999 for r in table)

        set_abstain_threshold(folder, None)
        assert not any(p.unsure for p in engine.predict(folder, rows))
    finally:
        engine.close()
    with pytest.raises(UserError, match="abstain_threshold"):
        set_abstain_threshold(folder, 1.5)
    config = json.loads(config_path.read_text())
    config["calibration"]["temperature"] = -1
    config_path.write_text(json.dumps(config))
    from ia3app.serving.bank import read_adapter

    with pytest.raises(UserError, match="calibration.temperature"):
        read_adapter(folder)


def test_old_results_without_intervals_still_read_and_get_intervals_from_the_confusion_matrix(trained_adapter):
    from ia3app.evaluation.uncertainty import differences_for, intervals_for

    _, result = trained_adapter
    data = json.loads(dumps(result))
    for m in data["evaluation"]["methods"].values():
        m.pop("intervals")
    for key in ("differences", "calibration", "gold"):
        data["evaluation"].pop(key)
    data["training"].pop("loss_curve")
    old = JobResult.from_dict(data)
    tfew = old.method("t-few")
    recomputed = intervals_for(tfew)
    assert recomputed["accuracy"]["value"] == pytest.approx(tfew["accuracy"])
    assert recomputed["accuracy"] == result.method("t-few")["intervals"]["accuracy"]  # same pairs, same seed
    assert differences_for(old.evaluation) == {}


def test_cli_cross_validation_prints_intervals_folds_and_calibration(tiny_model_dir, tmp_path, capsys):
    from ia3app.cli.main import main

    rows = "sentence,label\n" + "".join(
        f"film {i} was {'great' if i % 2 else 'awful'},{'positive' if i % 2 else 'negative'}\n" for i in range(8))
    (tmp_path / "train.csv").write_text(rows)
    code = main(["train", "--csv", str(tmp_path / "train.csv"), "--template", "sentiment", "--column", "text=sentence",
                 "--model", str(tiny_model_dir("t0")), "--out", str(tmp_path / "adapter"), "--steps", "2",
                 "--batch-size", "2", "--cv", "2", "--methods", "zero-shot", "t-few", "--device", "cpu"])
    assert code == 0
    captured = capsys.readouterr()
    assert "2-fold cross-validation: 3 training runs of 2 steps each" in captured.err
    out = captured.out
    assert "95% CI" in out and "T-Few − zero-shot, same 8 rows: accuracy" in out
    assert "2-fold cross-validation (4 rows per fold)" in out
    assert "fitted on 8 cross-validation rows" in out
    results = json.loads((tmp_path / "adapter" / "results.json").read_text())
    assert len(results["evaluation"]["folds"]) == 2
    assert main(["train", "--csv", str(tmp_path / "train.csv"), "--template", "sentiment", "--column",
                 "text=sentence", "--model", str(tiny_model_dir("t0")), "--out", str(tmp_path / "b"),
                 "--cv", "2", "--holdout", "0.25"]) == 2
    assert "leave out --eval-csv and --holdout" in capsys.readouterr().err


def test_results_page_words_intervals_and_threshold(trained_adapter):
    from ui import results_display as R

    _, result = trained_adapter
    frame = R.metrics_frame(result)
    assert {"accuracy 95 % CI", "macro-F1 95 % CI"} <= set(frame.columns)
    assert all(re.fullmatch(r"\d+\.\d% – \d+\.\d%", cell) for cell in frame["accuracy 95 % CI"])
    words = R.sureness_md(result)
    assert "T-Few − in-context, same 8 rows: accuracy" in words and "T-Few − zero-shot" in words
    cal = result.evaluation["calibration"]
    assert "No threshold: answers every row (8)" in R.coverage_words(result, None)
    top = cal["coverage"][0]  # the most confident rows only
    text = R.coverage_words(result, top["threshold"])
    assert f"answers {top['coverage']:.0%} of rows ({top['answered']} of 8)" in text
    assert "answers none of the 8 rows" in R.coverage_words(result, 0.999999)
    figures = [R.P.intervals_figure(result), R.P.reliability_figure(cal), R.P.coverage_figure(cal, 0.6)]
    assert all(f is not None for f in figures)

    # a result stored before intervals existed: the table recomputes them from the confusion matrix
    data = json.loads(dumps(result))
    for m in data["evaluation"]["methods"].values():
        m.pop("intervals")
    for key in ("differences", "calibration", "gold"):
        data["evaluation"].pop(key)
    old = JobResult.from_dict(data)
    assert list(R.metrics_frame(old)["accuracy 95 % CI"]) == list(frame["accuracy 95 % CI"])
    assert "paired differences appear for jobs run since" in R.sureness_md(old)
    assert "needs held-out or cross-validated rows" in R.coverage_words(old, 0.5)
    assert R.P.reliability_figure(None) is None and R.P.folds_figure(old.evaluation) is None


def test_the_headline_says_plainly_whether_t_few_beat_the_baselines():
    from ia3app.evaluation.uncertainty import headline

    def evaluation(icl: tuple[float, float], zs: tuple[float, float]) -> dict:
        entry = lambda lo, hi: {"accuracy": {"low": lo, "high": hi, "difference": (lo + hi) / 2, "n": 40}}  # noqa: E731
        return {"differences": {"t-few − in-context": entry(*icl), "t-few − zero-shot": entry(*zs)}}

    assert headline(evaluation((0.05, 0.3), (0.1, 0.4))) == \
        "On these 40 rows T-Few beats in-context learning and the base model zero-shot (intervals below)."
    unclear = headline(evaluation((-0.1, 0.2), (0.1, 0.4)))
    assert unclear.startswith("On these 40 rows T-Few does not clearly beat in-context learning:")
    worse = headline(evaluation((-0.3, -0.05), (-0.1, 0.2)))
    assert worse.startswith("On these 40 rows T-Few is worse than in-context learning: do not use this adapter")
    assert headline({}) is None and headline(None) is None  # results stored before the differences existed


def test_results_json_keeps_its_shape_and_the_report_types_name_it(trained_adapter):
    """Issue 21 item 2: the evaluation report inside JobResult is typed (ia3app.evaluation.report) without
    changing results.json: the same keys in the same order at every level, and a stored result reads back and
    writes out byte for byte; the TypedDicts name exactly the keys a job writes."""
    import json

    from ia3app.evaluation.report import (Calibration, ClassScores, Difference, EvaluationReport, Headline,
                                          Interval, MethodReport)
    from ia3app.jobtypes import JobResult, dumps, loads

    out, result = trained_adapter
    text = dumps(result, indent=2)
    assert dumps(loads(JobResult, text), indent=2) == text
    data = json.loads(text)
    assert list(data) == ["model", "revision", "template", "train_templates", "labels", "recipe", "init_vectors",
                          "params", "training", "evaluation", "metrics", "num_train", "num_eval", "warnings"]
    ev = data["evaluation"]
    assert list(ev) == ["methods", "labels", "num_parameters", "encoder_decoder", "ratios", "gold", "differences",
                        "calibration"]
    assert list(ev["methods"]) == ["zero-shot", "in-context", "t-few"]
    head = ["n", "accuracy", "macro_f1", "per_class", "confusion_matrix", "labels"]
    tail = ["latency_s", "latency_runs", "tokens", "flops", "predictions", "probs", "intervals"]
    icl = ["shots", "min_shots", "input_limit", "shots_per_class", "meaningful"]
    assert list(ev["methods"]["zero-shot"]) == list(ev["methods"]["t-few"]) == head + tail
    assert list(ev["methods"]["in-context"]) == head + icl + tail
    assert list(ev["methods"]["t-few"]["per_class"][0]) == ["class", "precision", "recall", "f1", "support"]
    assert list(ev["methods"]["t-few"]["intervals"]) == ["accuracy", "macro_f1"]
    assert list(ev["methods"]["t-few"]["intervals"]["accuracy"]) == ["value", "low", "high", "level", "n", "samples"]
    assert list(ev["ratios"]) == ["in-context / t-few"] and list(ev["ratios"]["in-context / t-few"]) == [
        "latency_s", "flops", "tokens"]
    assert list(ev["differences"]) == ["t-few − in-context", "t-few − zero-shot"]
    assert list(ev["differences"]["t-few − zero-shot"]["accuracy"]) == [
        "metric", "a", "b", "difference", "low", "high", "level", "n", "samples", "verdict"]
    assert list(ev["calibration"]) == ["temperature", "source", "n", "ece_before", "ece_after", "ece_after_cross_fit",
                                       "reliability_before", "reliability_after", "coverage"]
    assert list(data["metrics"]["t-few"]) == ["accuracy", "macro_f1", "n"]

    def names_exactly(typed, value):
        assert typed.__required_keys__ <= set(value) <= typed.__required_keys__ | typed.__optional_keys__, typed

    names_exactly(EvaluationReport, ev)
    for method in ev["methods"].values():
        names_exactly(MethodReport, method)
        names_exactly(ClassScores, method["per_class"][0])
        names_exactly(Interval, method["intervals"]["accuracy"])
    names_exactly(Difference, ev["differences"]["t-few − in-context"]["macro_f1"])
    names_exactly(Calibration, ev["calibration"])
    names_exactly(Headline, data["metrics"]["zero-shot"])
    assert set(icl) <= MethodReport.__optional_keys__ and {"gold", "folds"} <= EvaluationReport.__optional_keys__

    from ia3app.adapters.folder_config import AdapterConfig, ModuleEntry

    config = json.loads((out / "ia3_config.json").read_text(encoding="utf-8"))
    assert list(config) == ["format", "format_version", "ia3app_version", "base_model", "revision", "architecture",
                            "model_type", "family", "spec", "modules", "fingerprint", "num_parameters", "template",
                            "choices", "recipe", "metrics", "calibration", "abstain_threshold"]
    names_exactly(AdapterConfig, config)
    names_exactly(ModuleEntry, config["modules"][0])
