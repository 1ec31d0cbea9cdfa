"""The training loop on tiny real models: what trains, progress, cancel, checkpoint and exact resume."""

import pytest
import torch

from ia3app.recipe.checkpoint import checkpoint_path, load_checkpoint
from ia3app.config import RecipeConfig
from ia3app.jobtypes import ProgressEvent
from ia3app.errors import Cancelled, UserError
from ia3app.example import Example
from ia3app.adapters.ia3 import inject, is_ia3_parameter
from ia3app.backbones.loading import load_model
from ia3app.recipe.train import EpochSampler, train

EXAMPLES = [
    Example("great fun, loved it", ("positive", "negative"), 0),
    Example("dull and far too long", ("positive", "negative"), 1),
    Example("a wonderful cast", ("positive", "negative"), 0),
    Example("I want my money back", ("positive", "negative"), 1),
    Example("which is larger? 3 or 7", ("three", "seven", "same"), 1),
]
KEYS = {"phase", "step", "total_steps", "loss", "loss_lm", "loss_ul", "loss_ln", "lr", "examples_per_s",
        "elapsed_s", "eta_s"}


def fresh(tiny_model_dir, kind="t0"):
    loaded = load_model(str(tiny_model_dir(kind)), device="cpu")
    return loaded, inject(loaded.model)


def recipe(**kw):
    base = dict(steps=20, batch_size=4, warmup_steps=4, lr=3e-2, checkpoint_every=10, seed=3)
    return RecipeConfig(**{**base, **kw})


@pytest.mark.parametrize("kind", ["t0", "gpt2"])
def test_trains_only_the_vectors_and_reports_every_step(tiny_model_dir, kind):
    loaded, handle = fresh(tiny_model_dir, kind)
    base_before = {n: p.detach().clone() for n, p in loaded.model.named_parameters() if not is_ia3_parameter(n)}
    events = []
    result = train(handle, loaded.tokenizer, EXAMPLES, recipe(), progress=events.append)

    assert all(isinstance(e, ProgressEvent) for e in events)
    records = [e.to_dict() for e in events]
    assert [r["step"] for r in records] == list(range(1, 21))
    assert all(set(r) == KEYS and r["phase"] == "train" and r["total_steps"] == 20 for r in records)
    assert records[0]["lr"] == 0.0 and records[4]["lr"] == pytest.approx(3e-2)  # warmup from 0 over 4 steps
    assert records[-1]["lr"] == pytest.approx(3e-2 / 16)  # then linear decay towards 0 at step 20
    assert records[-1]["eta_s"] == 0.0
    assert result.steps == 20 and result.resumed_from_step == 0 and len(result.history) == 20
    assert set(result.losses) == {"lm", "ul", "ln", "total"}
    assert result.tokens_processed > 0 and result.examples_per_s > 0
    assert loaded.model.training is False

    for n, p in loaded.model.named_parameters():
        if not is_ia3_parameter(n):
            assert torch.equal(p, base_before[n]), n
    assert any(not torch.allclose(v, torch.ones_like(v)) for v in handle.vectors().values())
    first = sum(r["loss"] for r in records[:5]) / 5
    final = sum(r["loss"] for r in records[-5:]) / 5
    assert final < first


def test_stop_then_resume_equals_straight_run(tiny_model_dir, tmp_path):
    loaded, handle = fresh(tiny_model_dir)
    straight = train(handle, loaded.tokenizer, EXAMPLES, recipe())
    want = handle.vectors()

    loaded, handle = fresh(tiny_model_dir)
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        train(handle, loaded.tokenizer, EXAMPLES, recipe(checkpoint_every=7), checkpoint_dir=tmp_path,
              should_stop=lambda: next(calls) >= 10)  # stops before step 11: checkpoint at 10
    assert load_checkpoint(tmp_path).step == 10

    loaded, handle = fresh(tiny_model_dir)  # a fresh process would see exactly this
    resumed = train(handle, loaded.tokenizer, EXAMPLES, recipe(checkpoint_every=7), checkpoint_dir=tmp_path)
    assert resumed.resumed_from_step == 10 and len(resumed.history) == 20
    got = handle.vectors()
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=0)
    assert resumed.losses == pytest.approx(straight.losses, abs=1e-6)
    assert load_checkpoint(tmp_path).step == 20
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary files behind


def test_resume_with_other_settings_is_refused(tiny_model_dir, tmp_path):
    loaded, handle = fresh(tiny_model_dir)
    train(handle, loaded.tokenizer, EXAMPLES, recipe(steps=10, warmup_steps=2), checkpoint_dir=tmp_path)
    assert checkpoint_path(tmp_path).is_file()
    with pytest.raises(UserError, match="other settings"):
        train(handle, loaded.tokenizer, EXAMPLES, recipe(steps=12, warmup_steps=2), checkpoint_dir=tmp_path)


def test_cancel_before_first_step(tiny_model_dir, tmp_path):
    loaded, handle = fresh(tiny_model_dir)
    with pytest.raises(Cancelled):
        train(handle, loaded.tokenizer, EXAMPLES, recipe(), checkpoint_dir=tmp_path, should_stop=lambda: True)
    assert not checkpoint_path(tmp_path).exists()
    assert all(torch.equal(v, torch.ones_like(v)) for v in handle.vectors().values())


def test_gradient_accumulation_matches_full_batch_closely(tiny_model_dir):
    loaded, handle = fresh(tiny_model_dir)
    train(handle, loaded.tokenizer, EXAMPLES[:4], recipe(steps=5, warmup_steps=0, unlikelihood=False, length_norm=False))
    full = handle.vectors()
    loaded, handle = fresh(tiny_model_dir)
    train(handle, loaded.tokenizer, EXAMPLES[:4],
          recipe(steps=5, warmup_steps=0, grad_accumulation=2, unlikelihood=False, length_norm=False))
    # L_LM averages tokens over the batch; split in halves it averages per half, so only close.
    for key, value in handle.vectors().items():
        torch.testing.assert_close(value, full[key], atol=2e-3, rtol=0)


def test_unlabelled_or_empty_data_is_a_user_error(tiny_model_dir):
    loaded, handle = fresh(tiny_model_dir)
    with pytest.raises(UserError, match="no label"):
        train(handle, loaded.tokenizer, [Example("x", ("a", "b"))], recipe())
    with pytest.raises(UserError, match="no training examples"):
        train(handle, loaded.tokenizer, [], recipe())


def test_sampler_is_seeded_epochwise_and_resumable():
    a = EpochSampler(5, seed=1)
    first = [a.next_batch(3) for _ in range(4)]  # 12 draws: two full epochs and part of a third
    flat = [i for b in first for i in b]
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(range(5))
    b = EpochSampler(5, seed=1)
    b.next_batch(3)
    c = EpochSampler(5, seed=99)
    c.load_state_dict(b.state_dict())
    assert [c.next_batch(3) for _ in range(3)] == first[1:]


def test_vector_adafactor_trains_like_transformers_adafactor(tiny_model_dir):
    loaded, handle = fresh(tiny_model_dir)
    train(handle, loaded.tokenizer, EXAMPLES, recipe(steps=8, weight_decay=0.01), optimizer="transformers")
    want = handle.vectors()
    loaded, handle = fresh(tiny_model_dir)
    train(handle, loaded.tokenizer, EXAMPLES, recipe(steps=8, weight_decay=0.01))  # "auto": VectorAdafactor
    for key, value in handle.vectors().items():
        torch.testing.assert_close(value, want[key], atol=1e-5, rtol=0)
