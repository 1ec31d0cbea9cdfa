"""Prediction service: merged adapters, no reload on repeat, LRU of base models, thread safety, CSV."""

import csv
import io
import threading

import pytest
import torch

from ia3app.adapter_io import save_adapter
from ia3app.errors import UserError
from ia3app.ia3 import inject
from ia3app.models import load_model
from ia3app.predict import Predictor
from ia3app.scoring import score_choices
from ia3app.templates import TemplateSpec, render_all

TEMPLATE = TemplateSpec(
    name="sentiment", input="{{sentence}} Is it good or bad?", choices=["bad", "good"],
    label_map={"negative": "bad", "positive": "good"},
)
ROWS = [{"sentence": s} for s in ("a dull film", "a wonderful film", "so so", "=SUM(A1)", "great acting")]


def make_adapter(model_dir, out, seed):
    loaded = load_model(str(model_dir), device="cpu")
    handle = inject(loaded.model)
    g = torch.Generator().manual_seed(seed)
    handle.load_vectors({k: 1 + 0.8 * torch.randn(v.shape, generator=g) for k, v in handle.vectors().items()})
    save_adapter(handle, out, base_model=str(model_dir), extra={"template": TEMPLATE.to_dict(), "choices": ["bad", "good"],
                                                               "recipe": {"max_length": 64}})
    return loaded, handle


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    base = tiny_model_dir("t0")
    root = tmp_path_factory.mktemp("adapters")
    a_loaded, a_handle = make_adapter(base, root / "a", seed=1)
    make_adapter(base, root / "b", seed=2)
    # reference: the unmerged adapter a, scored directly
    ref = score_choices(a_loaded.model, a_loaded.tokenizer, render_all(TEMPLATE, ROWS), max_length=64)
    return root / "a", root / "b", ref


def test_predict_matches_unmerged_adapter_and_reuses_the_model(adapters):
    a, b, ref = adapters
    predictor = Predictor()
    out = predictor.predict(a, ROWS)
    assert [o["choice"] for o in out] == [["bad", "good"][r.pred] for r in ref]
    assert [o["label"] for o in out] == [{"bad": "negative", "good": "positive"}[o["choice"]] for o in out]
    for o, r in zip(out, ref):
        assert list(o["probs"]) == ["bad", "good"]
        assert list(o["probs"].values()) == pytest.approx(r.probs, abs=1e-5)
    again = predictor.predict(a, ROWS[:2])
    assert again == out[:2]
    assert (predictor.loads, predictor.switches) == (1, 1)  # second request: no reload, no re-merge

    predictor.predict(b, ROWS)  # another adapter on the same base: switch, no load
    assert (predictor.loads, predictor.switches) == (1, 2)
    assert predictor.predict(a, ROWS) == out  # back to a: restore + merge gives the same answers
    assert (predictor.loads, predictor.switches) == (1, 3)


def test_lru_of_base_models(adapters, tiny_model_dir, tmp_path):
    a, _, _ = adapters
    make_adapter(tiny_model_dir("t0", d_model=32), tmp_path / "c", seed=3)
    predictor = Predictor(max_models=1)
    predictor.predict(a, ROWS[:1])
    predictor.predict(tmp_path / "c", ROWS[:1])
    predictor.predict(a, ROWS[:1])
    assert predictor.loads == 3  # each evicted the other
    roomy = Predictor(max_models=2)
    for adapter in (a, tmp_path / "c", a, tmp_path / "c"):
        roomy.predict(adapter, ROWS[:1])
    assert roomy.loads == 2


def test_concurrent_requests_are_safe(adapters):
    a, b, _ = adapters
    sequential = Predictor()
    want = {a: sequential.predict(a, ROWS), b: sequential.predict(b, ROWS)}
    predictor = Predictor()
    got, errors = [], []

    def worker(adapter):
        try:
            for _ in range(3):
                got.append((adapter, predictor.predict(adapter, ROWS)))
        except Exception as exc:  # collected and re-raised below, in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(x,)) for x in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(got) == 12 and all(result == want[adapter] for adapter, result in got)
    assert predictor.loads == 1


def test_predict_csv(adapters):
    a, _, _ = adapters
    data = "sentence,label\n" + "\n".join(f'"{r["sentence"]}",positive' for r in ROWS) + "\n"
    out = Predictor().predict_csv(a, data.encode())
    table = list(csv.DictReader(io.StringIO(out.decode())))
    assert list(table[0]) == ["sentence", "label", "prediction", "predicted_choice", "prob_bad", "prob_good"]
    assert table[3]["sentence"] == "'=SUM(A1)"  # formulas neutralised
    for row in table:
        assert abs(float(row["prob_bad"]) + float(row["prob_good"]) - 1) < 1e-5
        assert row["prediction"] in ("negative", "positive")


def test_user_errors(adapters, tmp_path):
    a, _, _ = adapters
    with pytest.raises(UserError, match="column 'sentence'"):
        Predictor().predict(a, [{"text": "x"}])
    with pytest.raises(UserError, match="does not exist|adapter"):
        Predictor().predict(tmp_path / "nowhere", ROWS)
    assert Predictor().predict(a, []) == []
