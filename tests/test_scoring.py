"""Rank classification on tiny real models: encoder reuse, batching, lengths, mixed-adapter batches."""

import pytest
import torch

from ia3app.example import Example
from ia3app.adapters.ia3 import inject
from ia3app.backbones.loading import load_model
from ia3app.evaluation.scoring import choice_log_probs, score_choices

EXAMPLES = [
    Example("the film was a delight from start to end", ("positive", "negative"), 0),
    Example("awful", ("yes", "no", "it is impossible to tell"), 2),
    Example("Premise: a man plays guitar. Hypothesis: someone makes music.", ("true", "false", "x"), 0),
    Example("short", ("a", "much longer answer choice here"), 1),
]


def scores_of(results):
    return torch.tensor([s for r in results for s in r.scores])


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    cache = {}

    def get(kind):
        if kind not in cache:
            cache[kind] = load_model(str(tiny_model_dir(kind)), device="cpu")
        return cache[kind]

    return get


@pytest.mark.parametrize("kind", ["t0", "bart"])
def test_encoder_reuse_equals_reencoding(models, kind):
    m = models(kind)
    reused = score_choices(m.model, m.tokenizer, EXAMPLES)
    again = score_choices(m.model, m.tokenizer, EXAMPLES, reuse_encoder=False)
    torch.testing.assert_close(scores_of(reused), scores_of(again), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["t0", "t5", "gpt2", "llama"])
def test_batched_equals_one_by_one(models, kind):
    m = models(kind)
    batched = score_choices(m.model, m.tokenizer, EXAMPLES, batch_size=3)
    single = [score_choices(m.model, m.tokenizer, [e])[0] for e in EXAMPLES]
    torch.testing.assert_close(scores_of(batched), scores_of(single), atol=1e-5, rtol=0)
    for r in batched:
        assert sum(r.probs) == pytest.approx(1.0, abs=1e-6)
        assert r.pred == max(range(len(r.scores)), key=r.scores.__getitem__)


def test_encoder_decoder_score_is_mean_token_logprob(models):
    """β of each choice (different lengths) equals transformers' own mean token cross-entropy, negated."""
    m = models("t0")
    result = score_choices(m.model, m.tokenizer, EXAMPLES)
    for ex, r in zip(EXAMPLES, result):
        enc = m.tokenizer(ex.input, return_tensors="pt")
        for choice, score in zip(ex.choices, r.scores):
            labels = m.tokenizer(choice, return_tensors="pt").input_ids  # ends with EOS
            with torch.no_grad():
                loss = m.model(**enc, labels=labels).loss
            assert score == pytest.approx(-loss.item(), abs=1e-5)


def test_decoder_only_scores_the_continuation(models):
    m = models("gpt2")
    ex = EXAMPLES[3]
    result = score_choices(m.model, m.tokenizer, [ex])[0]
    prompt = m.tokenizer(ex.input).input_ids[:-1]  # ByT5 closes texts with EOS: continue instead
    for choice, score in zip(ex.choices, result.scores):
        cont = m.tokenizer(" " + choice, add_special_tokens=False).input_ids + [m.tokenizer.eos_token_id]
        ids = torch.tensor([prompt + cont])
        with torch.no_grad():
            logp = torch.log_softmax(m.model(ids).logits[0, :-1], -1)  # position p predicts p + 1
        picked = logp[torch.arange(len(prompt) - 1, ids.shape[1] - 1), ids[0, len(prompt):]]
        assert score == pytest.approx(picked.mean().item(), abs=1e-5)


def _random_vectors(handle, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: 1 + 0.5 * torch.randn(v.shape, generator=g) for k, v in handle.vectors().items()}


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_shared_prefix_equals_one_row_per_choice(tiny_model_dir, kind):
    """Each input read once (one row per example, 4-D slot mask, positions restarting per choice)
    gives the per-token log-probs and the gradients of the old one-row-per-choice layout."""
    m = load_model(str(tiny_model_dir(kind)), device="cpu")
    handle = inject(m.model)
    handle.load_vectors(_random_vectors(handle, 5))
    params = handle.trainable_parameters()
    outs, grads = [], []
    for shared in (True, False):
        out = choice_log_probs(m.model, m.tokenizer, EXAMPLES, shared_prefix=shared)
        grads.append(torch.autograd.grad(out.scores().sum(), params))
        outs.append(out)
    shared, per_choice = outs
    torch.testing.assert_close(shared.token_logprobs, per_choice.token_logprobs, atol=1e-5, rtol=0)
    assert torch.equal(shared.choice_index, per_choice.choice_index)
    assert torch.all(shared.token_logprobs[shared.token_mask == 0] == 0)
    assert shared.tokens_processed < per_choice.tokens_processed  # the inputs went through once
    assert any(g.abs().sum() > 0 for g in grads[0])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind,shared", [("t0", True), ("gpt2", True), ("gpt2", False), ("llama", True)])
def test_mixed_batch_equals_single_adapter(tiny_model_dir, kind, shared):
    m = load_model(str(tiny_model_dir(kind)), device="cpu")
    handle = inject(m.model)
    adapters = {"a": _random_vectors(handle, 1), "b": _random_vectors(handle, 2)}
    for name, vec in adapters.items():
        handle.add_adapter(name, vec)
    names = ["a", "b", None, "a"]
    mixed = score_choices(m.model, m.tokenizer, EXAMPLES, batch_size=4, adapter_names=names, handle=handle,
                          shared_prefix=shared)
    for ex, name, got in zip(EXAMPLES, names, mixed):
        handle.reset()
        if name is not None:
            handle.load_vectors(adapters[name])
        want = score_choices(m.model, m.tokenizer, [ex])[0]
        torch.testing.assert_close(torch.tensor(got.scores), torch.tensor(want.scores), atol=1e-5, rtol=0)


def test_choice_log_probs_layout_and_gradients(tiny_model_dir):
    m = load_model(str(tiny_model_dir("t0")), device="cpu")
    handle = inject(m.model)
    out = choice_log_probs(m.model, m.tokenizer, EXAMPLES)
    assert out.choice_index.tolist() == [[0, 1, -1], [2, 3, 4], [5, 6, 7], [8, 9, -1]]
    assert out.row_example.tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
    assert out.token_logprobs.shape == out.token_mask.shape
    assert torch.all(out.token_logprobs[out.token_mask == 0] == 0)
    assert out.tokens_processed > 0
    out.scores().sum().backward()
    grads = [p.grad for p in handle.trainable_parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
