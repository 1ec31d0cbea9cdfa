"""Three-way evaluation on one tiny backbone: metrics, costs, and the handle left as found."""

import pytest
import torch

from ia3app.evaluation.compare import evaluate_methods, label_names, tokens_per_prediction
from ia3app.example import Example
from ia3app.adapters.ia3 import inject
from ia3app.evaluation.in_context import IclConfig
from ia3app.backbones.loading import load_model
from ia3app.evaluation.scoring import score_choices

CHOICES = ("negative", "positive")


def rows(n, offset=0):
    return [Example(f"review {i + offset}: {'great' if i % 2 else 'awful'} film", CHOICES, i % 2) for i in range(n)]


def perturb(handle, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: 1 + 0.5 * torch.randn(v.shape, generator=g) for k, v in handle.vectors().items()}


@pytest.fixture(params=["t0", "gpt2"])
def setup(request, tiny_model_dir):
    loaded = load_model(str(tiny_model_dir(request.param)), device="cpu")
    handle = inject(loaded.model)
    trained = perturb(handle)
    handle.load_vectors(trained)
    return loaded, handle, trained


def test_three_methods_on_the_same_rows(setup):
    loaded, handle, trained = setup
    train, held = rows(8), rows(6, offset=100)
    out = evaluate_methods(loaded, handle, train, held, batch_size=4, icl=IclConfig(max_input_tokens=400))
    assert set(out["methods"]) == {"zero-shot", "in-context", "t-few"}
    assert out["labels"] == list(CHOICES)
    for r in out["methods"].values():
        assert r["n"] == 6 and 0 <= r["accuracy"] <= 1 and 0 <= r["macro_f1"] <= 1
        assert sum(map(sum, r["confusion_matrix"])) == 6
        assert r["latency_s"] > 0 and r["flops"] == pytest.approx(r["tokens"] * loaded.num_parameters * (1 if loaded.is_encoder_decoder else 2))
        assert len(r["probs"]) == 6 and all(abs(sum(p) - 1) < 1e-5 for p in r["probs"])
    icl = out["methods"]["in-context"]
    assert icl["shots"] >= 1 and icl["input_limit"] == 400
    ratios = out["ratios"]["in-context / t-few"]
    assert ratios["flops"] > 1 and ratios["tokens"] > 1

    # the handle is left restored with the trained vectors loaded
    assert not handle.merged
    for k, v in handle.vectors().items():
        assert torch.equal(v, trained[k])

    # t-few = the trained vectors (unmerged scoring gives the same predictions)
    unmerged = score_choices(loaded.model, loaded.tokenizer, held, batch_size=4)
    assert out["methods"]["t-few"]["predictions"] == [s.pred for s in unmerged]
    # zero-shot = the base function (vectors at ones)
    handle.reset()
    base = score_choices(loaded.model, loaded.tokenizer, held, batch_size=4)
    assert out["methods"]["zero-shot"]["predictions"] == [s.pred for s in base]
    for got, want in zip(out["methods"]["zero-shot"]["probs"], base):
        assert got == pytest.approx(want.probs, abs=1e-5)


def test_forced_shots_and_subset_of_methods(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir("t0")), device="cpu")
    handle = inject(loaded.model)
    out = evaluate_methods(
        loaded, handle, rows(4), rows(3, 50), methods=["in-context"], icl=IclConfig(shots=16), warmup=False
    )
    assert list(out["methods"]) == ["in-context"] and out["methods"]["in-context"]["shots"] == 16
    assert out["ratios"] == {}


def test_label_names_and_tokens(tiny_model_dir):
    assert label_names(rows(2)) == list(CHOICES)
    mixed = [Example("a", ("x", "y"), 0), Example("b", ("p", "q", "r"), 2)]
    assert label_names(mixed) == ["choice 1", "choice 2", "choice 3"]
    loaded = load_model(str(tiny_model_dir("t0")), device="cpu")
    # ByT5: "abc" + EOS = 4 input tokens; choices "x"+EOS, "yz"+EOS = 2 + 3
    assert tokens_per_prediction(loaded.tokenizer, [Example("abc", ("x", "yz"), 0)], 256, True) == 9
    # decoder-only: (3 + " x"+EOS) + (3 + " yz"+EOS) = 6 + 7
    assert tokens_per_prediction(loaded.tokenizer, [Example("abc", ("x", "yz"), 0)], 256, False) == 13
    assert tokens_per_prediction(loaded.tokenizer, [Example("abcdef", ("x", "y"), 0)], 3, True) == 3 + 2 + 2


def test_forced_shots_beyond_absolute_positions_is_a_user_error(tiny_model_dir):
    from ia3app.errors import UserError

    loaded = load_model(str(tiny_model_dir("gpt2")), device="cpu")  # 1,024 positions
    handle = inject(loaded.model)
    long_rows = [Example("x" * 300, CHOICES, i % 2) for i in range(4)]
    with pytest.raises(UserError, match="fewer shots"):
        evaluate_methods(loaded, handle, long_rows, rows(1), methods=["in-context"], icl=IclConfig(shots=8))
    assert not handle.merged


def test_in_context_states_demonstrations_per_class_and_flags_under_one(tiny_model_dir):
    from ia3app.evaluation.in_context import shots_note

    loaded = load_model(str(tiny_model_dir("t0")), device="cpu")
    handle = inject(loaded.model)
    out = evaluate_methods(loaded, handle, rows(4), rows(3, 50), methods=["in-context"], icl=IclConfig(shots=4),
                           warmup=False)
    icl = out["methods"]["in-context"]
    assert icl["shots_per_class"] == 2 and icl["meaningful"] is True
    assert shots_note(icl) == "4 demonstrations per prompt, 2 per class"
    # a prompt budget that fits one demonstration for two classes: half a demonstration per class
    long_train = [Example("x" * 60 + f" {i}", CHOICES, i % 2) for i in range(4)]
    out = evaluate_methods(loaded, handle, long_train, rows(3, 50), methods=["in-context"],
                           icl=IclConfig(max_input_tokens=110), warmup=False)
    icl = out["methods"]["in-context"]
    assert icl["shots"] == 1 and icl["shots_per_class"] == 0.5 and icl["meaningful"] is False
    assert shots_note(icl).startswith("1 demonstration per prompt, 0.5 per class: not meaningful")


def test_evaluation_reports_rows_scored_for_each_method(tiny_model_dir):
    """The job page's evaluation progress: every method reports its rows scored, ending with all of them."""
    loaded = load_model(str(tiny_model_dir("t0")), device="cpu")
    handle = inject(loaded.model)
    events = []
    evaluate_methods(loaded, handle, rows(4), rows(9, 100), batch_size=4, methods=["zero-shot", "t-few"],
                     progress=events.append)
    scored = [e.message for e in events if "rows scored" in e.message]
    assert all(e.phase == "evaluate" for e in events)
    done = "9 of 9 rows scored; timing 2 more runs over 9 rows for the latency"
    assert scored[-1] == f"t-few (method 2 of 2): {done}"
    assert f"zero-shot (method 1 of 2): {done}" in scored
    assert "zero-shot (method 1 of 2): 4 of 9 rows scored" in scored  # the first batch is always reported
