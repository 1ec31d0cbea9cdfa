"""Each shared few-shot CSV end to end: template -> a few training steps -> evaluate -> predict."""

import pytest

from ia3app.config import RecipeConfig
from ia3app.tables import load_csv
from ia3app.jobtypes import Holdout
from ia3app.recipe.run_job import JobSpec, run_job
from ia3app.serving.engine import ServingEngine
from ia3app.templates.task_shapes import guess_label_column, templates_fitting

CSVS = ["copa_32shot_seed0.csv", "rte_32shot_seed0.csv", "sst2_16shot_seed0.csv"]
EXPECTED = {"copa_32shot_seed0.csv": "cause_effect", "rte_32shot_seed0.csv": "nli2", "sst2_16shot_seed0.csv": "sentiment"}


@pytest.mark.parametrize("name", CSVS)
def test_csv_end_to_end(name, fewshot_dir, tiny_model_dir, tmp_path):
    table = load_csv(fewshot_dir / name)
    label = guess_label_column(table.columns)
    fitting = templates_fitting(table.columns, [r[label] for r in table.rows], label)
    template_name, template = fitting[0]
    assert template_name == EXPECTED[name]
    train_rows, eval_rows = Holdout(0.25, seed=0).split(table.rows, label)
    spec = JobSpec(model=str(tiny_model_dir("t0")), template=template,
                   recipe=RecipeConfig(steps=2, batch_size=2, warmup_steps=0, max_length=128, checkpoint_every=0))
    out = tmp_path / "adapter"
    result = run_job(spec, train_rows, eval_rows, work_dir=tmp_path / "work", out_dir=out, progress=lambda e: None)
    methods = result.methods
    assert set(methods) == {"zero-shot", "in-context", "t-few"}
    n_classes = len(result.labels)
    for r in methods.values():
        assert r["n"] == len(eval_rows)
        assert len(r["confusion_matrix"]) == n_classes and sum(map(sum, r["confusion_matrix"])) == len(eval_rows)
    assert methods["in-context"]["shots"] >= 1

    unlabelled = [{k: v for k, v in row.items() if k != label} for row in eval_rows]
    engine = ServingEngine(device="cpu")
    preds = engine.predict(out, unlabelled)
    engine.close()
    assert len(preds) == len(eval_rows)
    for p in preds:
        assert abs(sum(p.probabilities.values()) - 1) < 1e-5 and p.choice in p.probabilities
    # served by the engine = the T-Few evaluation's predictions
    assert [list(p.probabilities).index(p.choice) for p in preds] == methods["t-few"]["predictions"]
