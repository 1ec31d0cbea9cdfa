"""Compiled blocks (aot_eager: dynamo's tracing and guards without a C++ build): one shape-general compile
from the first step, no recompile for evaluation after a merge, and dynamo's cache limit made visible."""

import logging

import pytest
import torch
from tiny_batches import load_tiny, token_batch

from ia3app.adapters.ia3 import inject
from ia3app.recipe.device_plan import COMPILE_WATCH, compile_blocks, compile_stats, eager_blocks


@pytest.fixture(scope="module")
def compiled_t0(tiny_model_dir):
    """One compiled tiny T0 for the module (compiling is slow on a busy CPU); each test counts its own graphs."""
    torch._dynamo.reset()  # the cache is per code object, shared with other tests' T5 blocks
    handle = inject(load_tiny(tiny_model_dir, "t0"))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in handle.layers.values():
            layer.ia3.copy_(torch.empty(layer.features).uniform_(0.5, 1.5, generator=g))
    assert compile_blocks(handle.model, backend="aot_eager") == 4
    yield handle
    torch._dynamo.reset()


def batch(rows, length, decoder_length):
    """A token batch as the recipe passes it (attention mask, no key/value cache)."""
    inputs = token_batch("t0", rows=rows, length=length, decoder_length=decoder_length, seed=length)
    return {**inputs, "attention_mask": torch.ones_like(inputs["input_ids"]), "use_cache": False}


def train_forward(model, rows, length, decoder_length):
    model.train()
    model(**batch(rows, length, decoder_length)).logits.sum().backward()


def test_one_shape_general_compile_from_the_first_step(compiled_t0):
    model = compiled_t0.model
    train_forward(model, 4, 32, 8)  # the tiny T0 has 4 heads: a batch of 4 must not pin the batch size
    after_first = compile_stats()["graphs"]
    assert after_first >= 4  # one per block flavour: first / other encoder blocks, first / other decoder blocks
    for rows, length, decoder_length in ((4, 64, 8), (2, 96, 16), (3, 32, 24)):  # other widths and batch sizes
        train_forward(model, rows, length, decoder_length)
    assert compile_stats()["graphs"] == after_first


def test_evaluation_after_a_merge_runs_eager_without_recompiling(compiled_t0):
    handle = compiled_t0
    train_forward(handle.model, 4, 32, 8)
    graphs = compile_stats()["graphs"]
    inputs = batch(3, 40, 6)
    handle.model.eval()
    with torch.no_grad():
        with eager_blocks():
            unmerged = handle.model(**inputs).logits
            handle.merge()
            merged = handle.model(**inputs).logits
        assert compile_stats()["graphs"] == graphs  # neither the no-grad mode nor the merged layers compiled
        scale = unmerged.abs().max()
        assert (merged - unmerged).abs().max() <= 1e-5 * scale
        handle.restore()
        # the reason: outside eager_blocks the same evaluation compiles every block flavour again
        handle.model(**inputs)
    graphs_after = compile_stats()["graphs"]
    assert graphs_after > graphs
    train_forward(handle.model, 4, 64, 8)  # training afterwards still finds its compiled blocks
    assert compile_stats()["graphs"] == graphs_after


def test_hitting_the_cache_limit_is_counted_and_said(compiled_t0, caplog):
    handle = compiled_t0
    handle.model.train()
    train_forward(handle.model, 4, 32, 8)
    before = COMPILE_WATCH.limit_hits
    assert compile_stats()["cache_limit_hits"] == before
    # every block flavour is an entry of ONE code object's cache (transformers' checkpointing wrapper):
    # with a limit of 1 the next new guard set (eval mode with grad: not seen yet) is past it, and dynamo
    # runs the block eager
    handle.model.eval()
    with torch._dynamo.config.patch(recompile_limit=1), caplog.at_level(logging.WARNING, "ia3app.recipe.device_plan"):
        handle.model(**batch(2, 32, 8))
    assert COMPILE_WATCH.limit_hits > before
    assert "hit dynamo's cache limit (config.recompile_limit (1))" in caplog.text
    assert "run EAGER" in caplog.text
