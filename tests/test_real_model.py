"""The bundled real model (SmolLM2-135M-Instruct, Llama architecture, real weights) through the same
code as the tiny models: conversion, rank classification, the three losses, truncation, in-context
prompts, merging, mixed-adapter batches, the PEFT export and a short T-Few job that learns.

Slow: the model is converted once into the data directory's model cache (about a minute on a
2-core CPU, then reused) and loaded once for the module (about 20 s).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ia3app.adapters.ia3 import inject, is_ia3_parameter
from ia3app.backbones import bundled
from ia3app.backbones.loading import load_model
from ia3app.evaluation.scoring import choice_log_probs, common_prefix_length, decoder_input_ids, score_choices
from ia3app.example import Example
from ia3app.recipe.losses import tfew_losses
from ia3app.templates.chat import overhead_tokens, wrap_examples
from ia3app.templates.library import builtin
from ia3app.templates.rendering import render_all

pytestmark = pytest.mark.slow

CLEAR = [  # sentiment no reader would hesitate over: real weights get these right, random ones cannot
    ("A wonderful, moving film. I loved every minute of it.", 1),
    ("One of the best movies I have ever seen, brilliant acting.", 1),
    ("An absolute delight from start to finish.", 1),
    ("Beautiful, funny and heartfelt: a masterpiece.", 1),
    ("A boring, painful mess. I hated it.", 0),
    ("The worst film of the year, a complete waste of time.", 0),
    ("Dull, stupid and far too long.", 0),
    ("Terrible acting and an awful script.", 0),
]


@pytest.fixture(scope="module")
def real():
    path = bundled.resolve("smollm2-135m")  # converts once into the model cache, as the app does
    return load_model(path, device="cpu")


def sentiment_examples(tokenizer, chat=True):
    template = builtin("sentiment", label_values=["negative", "positive"], text="sentence")
    rows = [{"sentence": text, "label": ["negative", "positive"][y]} for text, y in CLEAR]
    return wrap_examples(tokenizer, render_all(template, rows), chat)


def random_vectors(handle, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.empty(n).uniform_(0.7, 1.3, generator=g) for k, n in handle.shapes().items()}


def test_the_bundled_model_is_a_real_llama_with_a_chat_template(real):
    assert real.model.config.model_type == "llama" and not real.is_encoder_decoder
    assert 130e6 < sum(p.numel() for p in real.model.parameters()) < 140e6
    assert real.tokenizer.chat_template and overhead_tokens(real.tokenizer, True) > 0


def test_rank_classification_with_real_weights_reads_plain_sentiment(real):
    examples = sentiment_examples(real.tokenizer)
    scored = score_choices(real.model, real.tokenizer, examples, max_length=256)
    positive = [s.probs[1] for s, ex in zip(scored, examples) if ex.label == 1]
    negative = [s.probs[1] for s, ex in zip(scored, examples) if ex.label == 0]
    # measured: p(positive) 0.44-0.57 on the positive texts, about 0.29 on the negative ones (chat-wrapped)
    assert min(positive) > max(negative) + 0.05, (positive, negative)
    assert sum(s.pred == ex.label for s, ex in zip(scored, examples)) >= 6


def test_the_three_losses_train_only_the_vectors(real):
    handle = inject(real.model)
    try:
        examples = sentiment_examples(real.tokenizer)[:4]
        real.model.train()
        out = choice_log_probs(real.model, real.tokenizer, examples, max_length=256)
        losses = tfew_losses(out.token_logprobs, out.token_mask, out.choice_index,
                             torch.tensor([ex.label for ex in examples]))
        assert all(torch.isfinite(v) for v in losses.values()) and losses["total"] > 0
        losses["total"].backward()
        grads = {n: p.grad for n, p in real.model.named_parameters() if p.grad is not None}
        assert grads and all(is_ia3_parameter(n) for n in grads)
        assert len(grads) == 3 * real.model.config.num_hidden_layers  # keys, values, feed-forward per block
        assert any(g.abs().sum() > 0 for g in grads.values())
    finally:
        real.model.eval()
        real.model.zero_grad(set_to_none=True)
        handle.unload()


def test_the_chat_templates_common_prefix_read_once_gives_the_same_losses_and_gradients(real):
    """Chat-wrapped rows start with the template's system block and user turn: read once per batch (a KV cache
    expanded to the rows), the log-probs, the three losses and the vectors' gradients equal reading every
    input whole."""
    handle = inject(real.model)
    try:
        handle.load_vectors(random_vectors(handle, 3))
        examples = sentiment_examples(real.tokenizer)[3:5]  # two rows, both labels (each loss's gradients: tiny tests)
        assert common_prefix_length(decoder_input_ids(real.tokenizer, examples, 256)) >= 20
        labels = torch.tensor([ex.label for ex in examples])
        params = handle.trainable_parameters()
        runs = []
        for common in (True, False):
            out = choice_log_probs(real.model, real.tokenizer, examples, max_length=256, common_prefix=common)
            losses = tfew_losses(out.token_logprobs, out.token_mask, out.choice_index, labels)
            runs.append((out, losses, torch.autograd.grad(losses["total"], params)))
        (once, losses_once, grads_once), (whole, losses_whole, grads_whole) = runs
        assert once.tokens_processed < whole.tokens_processed
        torch.testing.assert_close(once.token_logprobs, whole.token_logprobs, atol=1e-4, rtol=0)
        for key in ("lm", "ul", "ln", "total"):
            torch.testing.assert_close(losses_once[key], losses_whole[key], atol=1e-5, rtol=1e-4)
        assert any(g.abs().sum() > 0 for g in grads_once)
        for a, b in zip(grads_once, grads_whole):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-3)
    finally:
        handle.unload(merge=False)


def test_merged_mixed_and_peft_compute_the_same_function(real, tmp_path):
    peft = pytest.importorskip("peft")
    from ia3app.adapters.peft_export import export_peft

    handle = inject(real.model)
    try:
        examples = sentiment_examples(real.tokenizer)
        a, b = random_vectors(handle, 0), random_vectors(handle, 1)
        handle.load_vectors(a)
        unmerged = [s.scores for s in score_choices(real.model, real.tokenizer, examples)]
        handle.merge()
        merged = [s.scores for s in score_choices(real.model, real.tokenizer, examples)]
        handle.restore()
        torch.testing.assert_close(torch.tensor(merged), torch.tensor(unmerged), rtol=1e-4, atol=1e-4)

        handle.add_adapter("a", a)
        handle.add_adapter("b", b)
        names = ["a", "b", None, "a", "b", None, "a", "b"]
        mixed = score_choices(real.model, real.tokenizer, examples, adapter_names=names, handle=handle)
        alone = {}
        for name, vectors in (("a", a), ("b", b), (None, None)):
            handle.reset() if vectors is None else handle.load_vectors(vectors)
            alone[name] = score_choices(real.model, real.tokenizer, examples)
        for i, name in enumerate(names):
            torch.testing.assert_close(torch.tensor(mixed[i].scores), torch.tensor(alone[name][i].scores),
                                       rtol=1e-4, atol=1e-4)
        assert alone["a"][0].scores != alone["b"][0].scores

        handle.load_vectors(a)
        ids = real.tokenizer([ex.input for ex in examples[:2]], return_tensors="pt", padding=True)
        with torch.no_grad():
            ours = real.model(**ids).logits
        folder = export_peft(handle, tmp_path / "peft", base_model=bundled.resolve("smollm2-135m"))
    finally:
        handle.unload()
    theirs_model = peft.PeftModel.from_pretrained(load_model(bundled.resolve("smollm2-135m"), device="cpu").model,
                                                  folder).eval()
    with torch.no_grad():
        theirs = theirs_model(**ids).logits
    assert (theirs - ours).abs().max().item() <= 1e-4 * max(1.0, ours.abs().max().item())


def test_a_long_input_keeps_its_question_and_the_wrap_within_max_length(real):
    from ia3app.evaluation.in_context import build_prompts
    from ia3app.templates.truncate import fit_examples

    template = builtin("yes_no_question", label_values=["false", "true"])
    row = {"passage": "The river floods every spring. " * 200, "question": "does the river flood", "label": "true"}
    fitted = fit_examples(template, [row], render_all(template, [row]), real.tokenizer, 128).examples
    wrapped = wrap_examples(real.tokenizer, fitted, True)[0]
    assert len(real.tokenizer(wrapped.input)["input_ids"]) <= 128
    assert wrapped.input.rstrip().endswith("<|im_start|>assistant") and "does the river flood? Yes or no?" in wrapped.input

    # in-context prompts leave room for the wrap too: demonstrations, query and longest answer within the limit
    train = render_all(builtin("sentiment", label_values=["negative", "positive"], text="sentence"),
                       [{"sentence": t, "label": ["negative", "positive"][y]} for t, y in CLEAR])
    wrap = overhead_tokens(real.tokenizer, True)
    prompts = build_prompts(train, train[:2], real.tokenizer, limit=120 - wrap, decoder_only=True)
    for ex in wrap_examples(real.tokenizer, prompts.examples, True):
        assert len(real.tokenizer(ex.input)["input_ids"]) + 2 <= 120


def test_a_short_t_few_job_on_real_weights_beats_its_own_zero_shot(real, tmp_path, monkeypatch):
    """Through the job path the app runs (run_job: template, recipe, three losses, evaluation), with the
    product's own thread default (the idle cores: two on a quiet 2-core machine) rather than the suite's one."""
    monkeypatch.delenv("IA3APP_TRAIN_THREADS", raising=False)
    from bench import tfew_data
    from ia3app.config import RecipeConfig
    from ia3app.jobtypes import JobSpec
    from ia3app.recipe.run_job import run_job

    train, held = tfew_data.split(LEARN_TASK, 0, max_eval=LEARN_ROWS)
    task = tfew_data.TASKS[LEARN_TASK]
    template = builtin(task.template, label_values=sorted({r["label"] for r in train}), **task.columns)
    # Unwrapped: the chat wrap alone lifts zero-shot SST-2 to ~0.8 (64 rows), leaving a short run little to
    # show; plain, the base model answers 'negative' to nearly every row, and T-Few must learn the task.
    template = replace(template, chat=False)
    spec = JobSpec(model="smollm2-135m", template=template,
                   recipe=RecipeConfig(steps=LEARN_STEPS, checkpoint_every=0), eval_methods=["zero-shot", "t-few"])
    result = run_job(spec, train, held, work_dir=tmp_path / "w", out_dir=tmp_path / "a", progress=lambda e: None,
                     device="cpu")
    methods = result.evaluation["methods"]
    assert methods["t-few"]["accuracy"] >= methods["zero-shot"]["accuracy"] + LEARN_MARGIN, \
        {m: methods[m]["accuracy"] for m in methods}


LEARN_TASK, LEARN_ROWS, LEARN_STEPS, LEARN_MARGIN = "sst2", 64, 60, 0.08
"""Set from measured runs on this 2-core CPU (2026-12-05): unwrapped, 60 steps, 64 unseen rows: zero-shot 0.438,
T-Few 0.578 (+14.0 points; the paired interval still includes 0, and the results page says so); chat-wrapped,
40 steps: 0.797 -> 0.813. The margin leaves 6 points of headroom (4 rows) for float differences between machines.
The test took 351 s at load ~9 (training is seeded: the same machine gives the same figures)."""
