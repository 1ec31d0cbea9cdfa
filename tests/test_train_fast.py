"""The training step as the job runs it: tokenized once, no host syncs, same losses as the per-step path."""

import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import get_linear_schedule_with_warmup

from ia3app.recipe.batches import TokenCache, forward
from ia3app.config import RecipeConfig
from ia3app.errors import UserError
from ia3app.example import Example
from ia3app.adapters.ia3 import inject
from ia3app.recipe.losses import tfew_losses
from ia3app.backbones.loading import load_model
from ia3app.evaluation.scoring import choice_log_probs
from ia3app.recipe.train import EpochSampler, make_optimizer, train

ROWS = [
    Example("great fun, loved it", ("positive", "negative"), 0),
    Example("dull and far too long", ("positive", "negative"), 1),
    Example("a wonderful cast", ("positive", "negative"), 0),
    Example("I want my money back", ("positive", "negative"), 1),
    Example("which is larger? 3 or 7", ("three", "seven", "same"), 1),
    Example("is the sky green", ("yes", "no"), 1),
]
# The same rows rendered by a second template (T-Few draws one per row per step).
TWO_TEMPLATES = [(e, Example(f"Review: {e.input}. Sentiment?", e.choices, e.label)) for e in ROWS]
# Rows as a chat template wraps them: every input starts with the same system block and user turn.
SYSTEM = "<system>You are a careful annotator.</system>\n<user>"
CHAT_ROWS = [Example(SYSTEM + e.input, e.choices, e.label) for e in ROWS]
CHAT_TWO_TEMPLATES = [(Example(SYSTEM + a.input, a.choices, a.label), Example(SYSTEM + b.input, b.choices, b.label))
                      for a, b in TWO_TEMPLATES]

# Ops that make the host wait for the device: reading a value (.item(), int(), bool(), `if t`),
# or an output whose shape depends on the data.
SYNC_OPS = {
    torch.ops.aten._local_scalar_dense.default,
    torch.ops.aten.nonzero.default,
    torch.ops.aten.masked_select.default,
    torch.ops.aten.equal.default,
    torch.ops.aten.is_nonzero.default,
}


class SyncCounter(TorchDispatchMode):
    """Counts device reads by the ops the host would have to wait for on a GPU."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNC_OPS or getattr(func, "overloadpacket", None) in {op.overloadpacket for op in SYNC_OPS}:
            self.count += 1
        return func(*args, **(kwargs or {}))


def fresh(tiny_model_dir, kind="t0"):
    loaded = load_model(str(tiny_model_dir(kind)), device="cpu")
    return loaded, inject(loaded.model)


def recipe(**kw):
    base = dict(steps=8, batch_size=4, warmup_steps=2, lr=3e-2, checkpoint_every=0, seed=3, grad_accumulation=2)
    return RecipeConfig(**{**base, **kw})


def old_loop(handle, tokenizer, items, rec):
    """The per-step path train() used before: draw, tokenize, pad and score every micro-batch."""
    model, params = handle.model, handle.trainable_parameters()
    opt = make_optimizer(params, rec)
    sched = get_linear_schedule_with_warmup(opt, rec.warmup(), rec.steps)
    sampler = EpochSampler(len(items), rec.seed)
    torch.manual_seed(rec.seed)
    micro = rec.batch_size // rec.grad_accumulation
    out_losses = []
    model.train()
    for _ in range(rec.steps):
        batch = sampler.next_batch(rec.batch_size)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for begin in range(0, len(batch), micro):
            chunk = []
            for i in batch[begin : begin + micro]:
                item = items[i]
                chunk.append(item if isinstance(item, Example) else
                             item[int(torch.randint(len(item), (1,), generator=sampler.generator))])
            out = choice_log_probs(model, tokenizer, chunk, max_length=rec.max_length)
            losses = tfew_losses(out.token_logprobs, out.token_mask, out.choice_index,
                                 torch.tensor([e.label for e in chunk]))
            (losses["total"] * len(chunk) / len(batch)).backward()
            total += losses["total"].item() * len(chunk) / len(batch)
        torch.nn.utils.clip_grad_norm_(params, rec.max_grad_norm)
        opt.step()
        sched.step()
        out_losses.append(total)
    model.eval()
    return out_losses


@pytest.mark.parametrize("kind,shared", [("t0", True), ("gpt2", True), ("gpt2", False), ("llama", True), ("bart", True)])
def test_cached_forward_equals_per_call_scoring(tiny_model_dir, kind, shared):
    loaded, _ = fresh(tiny_model_dir, kind)
    enc_dec = loaded.is_encoder_decoder
    cache = TokenCache(ROWS, loaded.tokenizer, max_length=256, enc_dec=enc_dec, device="cpu", shared_prefix=shared)
    sampler = EpochSampler(len(ROWS), 0)
    plan = cache.plan(sampler, 0, 2, len(ROWS), len(ROWS), lambda i, g: 0)
    for mb in (plan.steps[0][0], plan.steps[1][0]):
        batch = cache.batch(plan, mb)
        examples = [ROWS[i] for i in plan.renderings[mb.rows].tolist()]
        want = choice_log_probs(loaded.model, loaded.tokenizer, examples, shared_prefix=shared)
        got = forward(loaded.model, batch, enc_dec, shared)
        torch.testing.assert_close(got.token_logprobs, want.token_logprobs, atol=1e-6, rtol=0)
        assert torch.equal(got.choice_index, want.choice_index) and mb.tokens == want.tokens_processed
        labels = torch.tensor([e.label for e in examples])
        a = tfew_losses(got.token_logprobs, got.token_mask, got.choice_index, batch["labels"], check=False)
        b = tfew_losses(want.token_logprobs, want.token_mask, want.choice_index, labels)
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_cached_forward_reads_the_common_prefix_once(tiny_model_dir, kind):
    """A micro-batch whose inputs share a prefix knows its length on the host and reads it once: the same
    log-probs, losses and token count as choice_log_probs (which reads it once too), and the same log-probs
    as reading every input whole."""
    loaded, _ = fresh(tiny_model_dir, kind)
    cache = TokenCache(CHAT_ROWS, loaded.tokenizer, max_length=256, enc_dec=False, device="cpu")
    plan = cache.plan(EpochSampler(len(CHAT_ROWS), 0), 0, 2, 4, 2, lambda i, g: 0, common_prefix=True)
    system = len(loaded.tokenizer(SYSTEM, add_special_tokens=False).input_ids)
    for mb in [mb for step in plan.steps for mb in step]:
        assert mb.prefix >= system
        batch = cache.batch(plan, mb)
        examples = [CHAT_ROWS[i] for i in plan.renderings[mb.rows].tolist()]
        want = choice_log_probs(loaded.model, loaded.tokenizer, examples)
        whole = choice_log_probs(loaded.model, loaded.tokenizer, examples, common_prefix=False)
        got = forward(loaded.model, batch, False, True, mb.prefix)
        torch.testing.assert_close(got.token_logprobs, want.token_logprobs, atol=1e-6, rtol=0)
        torch.testing.assert_close(got.token_logprobs, whole.token_logprobs, atol=1e-5, rtol=0)
        assert mb.tokens == want.tokens_processed == whole.tokens_processed - mb.prefix * (len(examples) - 1)
        a = tfew_losses(got.token_logprobs, got.token_mask, got.choice_index, batch["labels"], check=False)
        b = tfew_losses(whole.token_logprobs, whole.token_mask, whole.choice_index,
                        torch.tensor([e.label for e in examples]))
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)


@pytest.mark.parametrize("items", [ROWS, TWO_TEMPLATES], ids=["one-template", "two-templates"])
def test_train_equals_the_per_step_path(tiny_model_dir, items):
    loaded, handle = fresh(tiny_model_dir)
    want = old_loop(handle, loaded.tokenizer, items, recipe())
    want_vectors = handle.vectors()
    loaded, handle = fresh(tiny_model_dir)
    result = train(handle, loaded.tokenizer, items, recipe())
    # fp32 sums vs the old float64 host sums: equal to fp32 resolution (losses here are ~30, ulp 4e-6)
    assert [r["loss"] for r in result.history] == pytest.approx(want, rel=1e-6, abs=1e-6)
    for key, value in handle.vectors().items():
        torch.testing.assert_close(value, want_vectors[key], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("items,layout", [(TWO_TEMPLATES, "shared_prefix"), (CHAT_TWO_TEMPLATES, "common_prefix")],
                         ids=["shared-prefix", "common-prefix"])
def test_reading_less_trains_like_reading_everything(tiny_model_dir, kind, items, layout):
    """Decoder-only training with each input read once (shared_prefix), and with each micro-batch's common
    prefix read once (common_prefix, chat-wrapped rows): the same losses and vectors as the layout without
    it (gradients flow through the shared input, and through the prefix's cached keys and values), fewer
    tokens through the model."""
    results, vectors = [], []
    for on in (True, False):
        loaded, handle = fresh(tiny_model_dir, kind)
        results.append(train(handle, loaded.tokenizer, items, recipe(), **{layout: on}))
        vectors.append(handle.vectors())
    assert [r["loss"] for r in results[0].history] == pytest.approx([r["loss"] for r in results[1].history],
                                                                     rel=1e-5, abs=1e-5)
    for key, value in vectors[0].items():
        torch.testing.assert_close(value, vectors[1][key], atol=1e-5, rtol=0)
    assert any(v.ne(1).any() for v in vectors[0].values())  # it trained
    assert results[0].tokens_processed < results[1].tokens_processed


@pytest.mark.parametrize("kind,rows", [("t0", ROWS), ("gpt2", ROWS), ("llama", CHAT_ROWS)],
                         ids=["t0", "gpt2", "llama-common-prefix"])
def test_no_host_sync_inside_a_step(tiny_model_dir, kind, rows):
    """Device reads over a whole train() do not grow with the number of steps: a step makes none (the
    common prefix's length is known on the host)."""
    counts = {}
    for steps in (3, 9):
        loaded, handle = fresh(tiny_model_dir, kind)
        counter = SyncCounter()
        with counter:
            train(handle, loaded.tokenizer, rows, recipe(steps=steps), progress_interval_s=1e9)
        counts[steps] = counter.count
    assert counts[9] == counts[3], counts

    # The counter does see syncs: the per-call scoring path reads a token count back.
    loaded, _ = fresh(tiny_model_dir, kind)
    counter = SyncCounter()
    with counter:
        choice_log_probs(loaded.model, loaded.tokenizer, ROWS[:2])
    assert counter.count >= 1


def test_progress_is_delivered_for_every_step_in_bursts(tiny_model_dir):
    loaded, handle = fresh(tiny_model_dir)
    records = []
    train(handle, loaded.tokenizer, ROWS, recipe(steps=6), progress=records.append, progress_interval_s=1e9)
    assert [r.step for r in records] == list(range(1, 7))  # all handed out at the end, in order
    assert all(isinstance(r.loss, float) for r in records)


@pytest.mark.parametrize("kind,rows", [("t0", ROWS), ("llama", CHAT_ROWS)], ids=["t0", "llama-common-prefix"])
def test_activation_checkpointing_gives_the_same_training(tiny_model_dir, kind, rows):
    """Checkpointed blocks drop a KV cache (transformers): with them a common prefix is read per row again."""
    loaded, handle = fresh(tiny_model_dir, kind)
    plain = train(handle, loaded.tokenizer, rows, recipe(steps=4, activation_checkpointing="off"))
    loaded, handle = fresh(tiny_model_dir, kind)
    ckpt = train(handle, loaded.tokenizer, rows, recipe(steps=4, activation_checkpointing="on"))
    assert loaded.model.is_activation_checkpointing
    assert [r["loss"] for r in ckpt.history] == pytest.approx([r["loss"] for r in plain.history],
                                                              rel=1e-6 if kind == "t0" else 1e-5)
    if kind == "llama":
        assert ckpt.tokens_processed > plain.tokens_processed  # the prefix once per row, not once per batch
    assert any(not torch.allclose(v, torch.ones_like(v)) for v in handle.vectors().values())  # vectors got grads


def test_ten_step_recipe_warms_up_for_six_percent():
    rec = RecipeConfig(steps=10)
    assert rec.warmup_steps is None and rec.warmup() == 1  # round(0.6)
    assert RecipeConfig().warmup() == 60  # T-Few: 6 % of 1,000
    assert RecipeConfig(steps=10, warmup_steps=0).warmup() == 0  # explicit count still allowed
    assert RecipeConfig(steps=200, warmup_ratio=0.1).warmup() == 20


def test_ten_step_recipe_trains(tiny_model_dir):
    loaded, handle = fresh(tiny_model_dir)
    records = []
    train(handle, loaded.tokenizer, ROWS, RecipeConfig(steps=10, batch_size=4, checkpoint_every=0),
          progress=records.append)
    assert len(records) == 10 and records[0].lr == 0.0 and records[1].lr == pytest.approx(3e-3)


@pytest.mark.parametrize("kwargs, words", [
    (dict(steps=10, warmup_steps=20), "warmup_steps (20) exceeds steps (10); leave it empty"),
    (dict(warmup_ratio=1.5), "warmup_ratio must be a fraction of the steps"),
    (dict(warmup_steps=-1), "warmup_steps must be a whole number ≥ 0, or empty"),
    (dict(batch_size=8, grad_accumulation=3), "must be divisible by grad_accumulation (3): each step splits"),
    (dict(compile="fast"), "compile must be one of 'auto', 'on', 'off'"),
    (dict(activation_checkpointing="yes"), "activation_checkpointing must be one of"),
])
def test_bad_settings_are_explained(kwargs, words):
    with pytest.raises(UserError) as info:
        RecipeConfig(**kwargs)
    assert words in str(info.value)



def _compiled_vs_eager(tiny_model_dir, tmp_path):
    loaded, handle = fresh(tiny_model_dir)
    eager = train(handle, loaded.tokenizer, ROWS, recipe(steps=3, compile="off"))
    loaded, handle = fresh(tiny_model_dir)
    compiled = train(handle, loaded.tokenizer, ROWS, recipe(steps=3, compile="on"), compile_cache_dir=tmp_path)
    assert loaded.model._ia3_compiled_blocks == 4  # 2 encoder + 2 decoder blocks, compiled one by one
    # shape-general from the first step: one graph per block flavour (first / other encoder and decoder
    # blocks), whatever widths the later steps bring; no block fell back to eager
    assert (compiled.setup["new_graphs"], compiled.setup["cache_limit_hits"]) == (4, 0)
    # fp32 here: equal to rounding. (bf16 on a GPU: within 2e-2 relative, bench/gpu.py checks it.)
    assert [r["loss"] for r in compiled.history] == pytest.approx([r["loss"] for r in eager.history], rel=1e-5)
    return handle


@pytest.mark.slow
def test_compiled_blocks_train_like_eager(tiny_model_dir, tmp_path, monkeypatch):
    """Regional compilation through dynamo + AOTAutograd (no code generation: fast on a CPU)."""
    import torch._dynamo

    torch._dynamo.reset()
    monkeypatch.setenv("IA3APP_COMPILE_BACKEND", "aot_eager")
    _compiled_vs_eager(tiny_model_dir, tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("IA3APP_TEST_INDUCTOR") != "1",
                    reason="inductor's C++ build takes ~5 min on a 2-core CPU: IA3APP_TEST_INDUCTOR=1 runs it "
                    "(the aot_eager test above checks the same compiled path every run)")
def test_inductor_compiled_blocks_train_like_eager(tiny_model_dir, tmp_path):
    """The backend a GPU worker uses; inductor's C++ code generation takes minutes on a small CPU."""
    import torch._dynamo

    torch._dynamo.reset()
    _compiled_vs_eager(tiny_model_dir, tmp_path)
    assert any(tmp_path.iterdir())  # the persistent compile cache was written where asked


def test_memory_estimate_reproduces_the_measured_t0_3b_peak():
    """bench/RESULTS.md: T0-3B, bf16 base, batch 8 x 256 tokens x 3 choices: 21.4 GB peak on an H100."""
    from transformers import T5Config

    from ia3app.recipe.device_plan import activation_bytes, choose_memory

    t0_3b = T5Config(d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32, vocab_size=32128)
    weights = 2.85e9 * 2
    full = weights + activation_bytes(t0_3b, 8, 256, 6, 3, checkpointing=False)
    assert 0.9 * 21.4e9 < full < 1.1 * 21.4e9
    assert weights + activation_bytes(t0_3b, 8, 256, 6, 3, checkpointing=True) < 8e9  # the target
    t0_11b = T5Config(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, vocab_size=32128)
    assert 11.3e9 * 2 + activation_bytes(t0_11b, 8, 256, 6, 3, checkpointing=True) < 40e9
    # on a CPU nothing is chosen for memory: one micro-batch, checkpointing only when asked
    assert choose_memory(None, RecipeConfig(), "cpu", input_tokens=9, target_tokens=2, choices=2)[:2] == (False, 1)
    assert choose_memory(None, RecipeConfig(grad_accumulation=4, activation_checkpointing="on"), "cpu",
                         input_tokens=9, target_tokens=2, choices=2)[:2] == (True, 4)


@pytest.mark.parametrize("kind", ["t0", "gpt2"])
def test_length_buckets_pad_without_changing_the_losses(tiny_model_dir, kind):
    """Compiled runs round widths up (shapes repeat); the extra padding is masked out."""
    loaded, _ = fresh(tiny_model_dir, kind)
    enc_dec = loaded.is_encoder_decoder
    losses = []
    for bucket in ((1, 1), (32, 8)):
        cache = TokenCache(ROWS, loaded.tokenizer, max_length=256, enc_dec=enc_dec, device="cpu", bucket=bucket)
        plan = cache.plan(EpochSampler(len(ROWS), 0), 0, 1, 4, 4, lambda i, g: 0)
        mb = plan.steps[0][0]
        batch = cache.batch(plan, mb)
        out = forward(loaded.model, batch, enc_dec)
        losses.append(tfew_losses(out.token_logprobs, out.token_mask, out.choice_index, batch["labels"], check=False))
        widths = (batch["input_ids"].shape[1], batch["targets"].shape[1])
    assert widths[0] % 32 == 0 or widths[0] == cache.max_input
    for key in losses[0]:
        torch.testing.assert_close(losses[1][key], losses[0][key], rtol=1e-5, atol=1e-6)
