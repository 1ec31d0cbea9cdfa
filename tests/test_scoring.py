"""Rank classification on tiny real models: encoder reuse, batching, lengths, mixed-adapter batches."""

import pytest
import torch

from ia3app.example import Example
from ia3app.adapters.ia3 import inject
from ia3app.backbones.loading import load_model
from ia3app.evaluation.in_context import build_prompts
from ia3app.evaluation.scoring import choice_log_probs, common_prefix_length, decoder_input_ids, score_choices
from ia3app.recipe.losses import tfew_losses

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


@pytest.mark.parametrize("kind,shared,rows", [("t0", True, "plain"), ("gpt2", True, "plain"), ("gpt2", False, "plain"),
                                             ("llama", True, "plain"), ("llama", True, "prefixed")])
def test_mixed_batch_equals_single_adapter(tiny_model_dir, kind, shared, rows):
    """Per-row adapters score each row as its adapter alone does (rows with a common prefix: the mixed batch
    reads every input whole, the single adapter reads the prefix once)."""
    examples = PREFIXED if rows == "prefixed" else EXAMPLES
    m = load_model(str(tiny_model_dir(kind)), device="cpu")
    handle = inject(m.model)
    adapters = {"a": _random_vectors(handle, 1), "b": _random_vectors(handle, 2)}
    for name, vec in adapters.items():
        handle.add_adapter(name, vec)
    names = ["a", "b", None, "a"]
    mixed = score_choices(m.model, m.tokenizer, examples, batch_size=4, adapter_names=names, handle=handle,
                          shared_prefix=shared)
    for name in set(names):
        handle.reset()
        if name is not None:
            handle.load_vectors(adapters[name])
        alone = score_choices(m.model, m.tokenizer, examples, batch_size=4)  # one adapter: the prefix read once
        for n, got, want in zip(names, mixed, alone):
            if n == name:
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


# Rows that start with the same tokens, as chat-wrapped prompts do (the template's system block and the
# user turn's opening), of different lengths, with 2 or 3 choices.
SYSTEM = "<system>You are a careful annotator.</system>\n<user>Read the text and answer. "
PREFIXED = [Example(SYSTEM + e.input, e.choices, e.label) for e in EXAMPLES]


def _tiny(tiny_model_dir, kind, attn="sdpa"):
    m = load_model(str(tiny_model_dir(kind)), device="cpu")
    m.model.set_attn_implementation(attn)
    handle = inject(m.model)
    handle.load_vectors(_random_vectors(handle, 7))
    return m, handle


def test_common_prefix_length_leaves_every_input_a_token_and_skips_short_ones():
    assert common_prefix_length([[1] * 10 + [2], [1] * 10 + [3, 4]]) == 10
    assert common_prefix_length([[1] * 10, [1] * 12]) == 9  # the shorter input keeps its last token
    assert common_prefix_length([[1] * 7 + [2], [1] * 7 + [3]]) == 0  # below MIN_COMMON_PREFIX
    assert common_prefix_length([[1] * 7 + [2], [1] * 7 + [3]], minimum=4) == 7
    assert common_prefix_length([[1] * 20]) == 0  # one input: nothing to share
    assert common_prefix_length([[5] + [1] * 20, [1] * 21]) == 0


@pytest.mark.parametrize("kind,attn,rows", [("llama", "sdpa", "prefixed"), ("llama", "eager", "prefixed"),
                                            ("gpt2", "sdpa", "prefixed"), ("llama", "sdpa", "unrelated")])
def test_common_prefix_read_once_equals_each_input_whole(tiny_model_dir, kind, attn, rows):
    """The batch's common input prefix run once into a KV cache (expanded to the rows, gradients through its
    keys and values) gives the per-token log-probs, the three T-Few losses and each loss's gradients of the
    (IA)^3 vectors of reading every input whole, and of the old one-row-per-choice layout; rows that share
    nothing take the plain path."""
    examples = PREFIXED if rows == "prefixed" else EXAMPLES
    m, handle = _tiny(tiny_model_dir, kind, attn)
    params = handle.trainable_parameters()
    labels = torch.tensor([e.label for e in examples])
    ids = decoder_input_ids(m.tokenizer, examples, 256)
    prefix = common_prefix_length(ids)
    assert (prefix >= len(m.tokenizer(SYSTEM, add_special_tokens=False).input_ids)) if rows == "prefixed" else prefix == 0
    outs, grads, losses = [], [], []
    for shared, common in ((True, True), (True, False), (False, False)):
        out = choice_log_probs(m.model, m.tokenizer, examples, shared_prefix=shared, common_prefix=common)
        loss = tfew_losses(out.token_logprobs, out.token_mask, out.choice_index, labels)
        outs.append(out)
        losses.append(loss)
        grads.append([torch.autograd.grad(loss[key], params, retain_graph=True) for key in ("lm", "ul", "ln")])
    once, whole, per_choice = outs
    assert whole.tokens_processed - once.tokens_processed == prefix * (len(examples) - 1)
    for other, other_losses, other_grads in ((whole, losses[1], grads[1]), (per_choice, losses[2], grads[2])):
        torch.testing.assert_close(once.token_logprobs, other.token_logprobs, atol=1e-5, rtol=0)
        for key in ("lm", "ul", "ln", "total"):
            torch.testing.assert_close(losses[0][key], other_losses[key], atol=1e-5, rtol=1e-5)
        for mine, theirs in zip(grads[0], other_grads):
            assert any(g.abs().sum() > 0 for g in mine)
            for a, b in zip(mine, theirs):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_common_prefix_is_read_per_batch_in_score_choices(tiny_model_dir):
    """score_choices batches by length; each batch reads its own common prefix once, the scores unchanged;
    the embeddings (pool) come from the whole inputs."""
    m, _ = _tiny(tiny_model_dir, "llama")
    rows = PREFIXED + [Example(SYSTEM.upper() + e.input, e.choices, e.label) for e in EXAMPLES]  # two prefixes
    once = score_choices(m.model, m.tokenizer, rows, batch_size=3)
    whole = score_choices(m.model, m.tokenizer, rows, batch_size=3, common_prefix=False)
    torch.testing.assert_close(scores_of(once), scores_of(whole), atol=1e-5, rtol=0)
    embedded = score_choices(m.model, m.tokenizer, rows, batch_size=3, embed=True)
    torch.testing.assert_close(scores_of(embedded), scores_of(whole), atol=1e-5, rtol=0)
    plain = score_choices(m.model, m.tokenizer, rows, batch_size=3, embed=True, common_prefix=False)
    torch.testing.assert_close(torch.tensor([r.embedding for r in embedded]), torch.tensor([r.embedding for r in plain]))


def test_in_context_prompts_share_their_first_demonstrations(tiny_model_dir):
    """In-context prompts put the demonstrations in one seeded order: a batch's prompts share the first
    ones, read once; the scores equal reading every prompt whole."""
    m, _ = _tiny(tiny_model_dir, "llama")
    train_rows = [Example(f"review {i}: " + ("fine and fun" if i % 2 else "slow and dull"), ("good", "bad"), i % 2)
                  for i in range(12)]
    queries = [Example(e.input, e.choices, e.label) for e in PREFIXED[:2] + EXAMPLES[:2]]
    prompts = build_prompts(train_rows, queries, m.tokenizer, limit=300, decoder_only=True)
    ids = decoder_input_ids(m.tokenizer, prompts.examples, 300)
    assert common_prefix_length(ids) > 100  # several demonstrations in common
    once = score_choices(m.model, m.tokenizer, prompts.examples, batch_size=4, max_length=300)
    whole = score_choices(m.model, m.tokenizer, prompts.examples, batch_size=4, max_length=300, common_prefix=False)
    torch.testing.assert_close(scores_of(once), scores_of(whole), atol=1e-5, rtol=0)
