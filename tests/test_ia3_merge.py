"""Merge ("push down") and restore: same function merged, base weights back bit-for-bit."""

import pytest
import torch
from tiny_batches import load_tiny, token_batch

from ia3app.adapters.ia3 import Ia3Layer, inject

KINDS = ("t0", "t5", "bart", "gpt2", "llama")


def load(tiny_model_dir, kind, dtype=torch.float32):
    return load_tiny(tiny_model_dir, kind, dtype)


def batch(kind):
    return token_batch(kind, seed=1)


def randomise(handle, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in handle.layers.values():
            layer.ia3.copy_(torch.empty(layer.features).uniform_(0.5, 1.5, generator=g))


def assert_close_to_scale(actual, expected, tol=1e-5):
    """|a - e| <= tol * max|e|: fp32 rounding is relative to the logits' scale, not to each value."""
    scale = max(1.0, expected.abs().max().item())
    assert (actual - expected).abs().max().item() <= tol * scale


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_bit_equal(model, before):
    now = dict(model.named_parameters())
    assert set(now) == set(before)
    for name, value in before.items():
        assert now[name].dtype == value.dtype and torch.equal(now[name], value), name


@pytest.mark.parametrize("kind", KINDS)
def test_merged_equals_unmerged_and_restore_is_bit_exact(tiny_model_dir, kind):
    handle = inject(load(tiny_model_dir, kind))
    randomise(handle)
    before = snapshot(handle.model)
    inputs = batch(kind)
    with torch.no_grad():
        unmerged = handle.model(**inputs).logits
        handle.merge()
        assert handle.merged
        merged = handle.model(**inputs).logits
    assert_close_to_scale(merged, unmerged)
    # merged, the model is the plain transformers model again, its wrapped weights scaled
    plain = {n.replace(".base.", ".") for n in before if not n.endswith(".ia3")}
    assert {n for n, _ in handle.model.named_parameters()} == plain
    assert not any(isinstance(m, Ia3Layer) for m in handle.model.modules())
    for path, layer in handle.layers.items():
        assert handle.model.get_submodule(path) is layer.base
        assert not torch.equal(layer.base.weight, before[f"{path}.base.weight"])
    handle.restore()
    assert not handle.merged
    assert_bit_equal(handle.model, before)
    with torch.no_grad():
        torch.testing.assert_close(handle.model(**inputs).logits, unmerged, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ("t0", "bart", "gpt2"))
def test_merging_twice_is_a_no_op(tiny_model_dir, kind):
    handle = inject(load(tiny_model_dir, kind))
    randomise(handle)
    original = snapshot(handle.model)
    handle.merge()
    once = snapshot(handle.model)
    handle.merge()
    assert_bit_equal(handle.model, once)
    handle.restore()
    handle.restore()  # restoring twice is harmless too
    assert_bit_equal(handle.model, original)


def test_biases_are_scaled_where_the_output_has_one(tiny_model_dir):
    handle = inject(load(tiny_model_dir, "bart"))
    randomise(handle)
    layer = handle.layers["model.decoder.layers.0.encoder_attn.k_proj"]
    bias = layer.base.bias.detach().clone()
    handle.merge()
    torch.testing.assert_close(layer.base.bias, bias * layer.ia3.detach(), rtol=0, atol=1e-7)
    fc2 = handle.layers["model.decoder.layers.0.fc2"]  # input scaling leaves the bias alone
    assert torch.equal(fc2.base.bias, fc2._backup[1])


def test_loading_vectors_into_a_merged_model_remerges_from_the_originals(tiny_model_dir):
    handle = inject(load(tiny_model_dir, "gpt2"))
    original = snapshot(handle.model)
    inputs = batch("gpt2")
    randomise(handle, 1)
    first = handle.vectors()
    randomise(handle, 2)
    second = handle.vectors()
    with torch.no_grad():
        expected = handle.model(**inputs).logits  # unmerged, second vectors
        handle.load_vectors(first)
        handle.merge()
        handle.load_vectors(second)  # switch while merged: one multiply from the originals
        assert handle.merged
        assert_close_to_scale(handle.model(**inputs).logits, expected)
        handle.load_vectors(second)  # loading the same again does not compound
        assert_close_to_scale(handle.model(**inputs).logits, expected)
    handle.restore()
    for name, p in handle.model.named_parameters():
        if not name.endswith(".ia3"):
            assert torch.equal(p, original[name]), name


def test_mixed_batches_need_a_restored_model(tiny_model_dir):
    handle = inject(load(tiny_model_dir, "t0"))
    handle.merge()
    with pytest.raises(RuntimeError, match="restore"):
        with handle.mixed_batch([None, None]):
            pass


@pytest.mark.parametrize("kind", ("t0", "gpt2", "llama"))
def test_merge_in_bf16(tiny_model_dir, kind):
    handle = inject(load(tiny_model_dir, kind, dtype=torch.bfloat16))
    randomise(handle)
    before = snapshot(handle.model)
    assert before[next(iter(before))].dtype == torch.bfloat16
    inputs = batch(kind)
    with torch.no_grad():
        unmerged = handle.model(**inputs).logits.float()
        handle.merge()
        merged = handle.model(**inputs).logits.float()
    # bf16 keeps 8 bits of mantissa: the merged weights round once more than the unmerged path
    scale = unmerged.abs().max()
    assert (merged - unmerged).abs().max() <= 0.05 * scale
    handle.restore()
    assert_bit_equal(handle.model, before)


def test_unload_returns_plain_model_with_merged_weights(tiny_model_dir):
    handle = inject(load(tiny_model_dir, "llama"))
    randomise(handle)
    inputs = batch("llama")
    with torch.no_grad():
        adapted = handle.model(**inputs).logits
        plain = handle.unload(merge=True)
        assert not any(".ia3" in n or ".base." in n for n, _ in plain.named_parameters())
        assert_close_to_scale(plain(**inputs).logits, adapted)


def test_switching_adapters_reuses_originals_and_stays_exact(tiny_model_dir):
    handle = inject(load(tiny_model_dir, "gpt2"))
    original = snapshot(handle.model)
    inputs = batch("gpt2")
    expected = {}
    for seed in (1, 2):
        randomise(handle, seed)
        with torch.no_grad():
            expected[seed] = handle.model(**inputs).logits
    for seed in (1, 2, 1, 2):  # switch back and forth on the merged model
        handle.restore()
        randomise(handle, seed)
        handle.merge()
        with torch.no_grad():
            assert_close_to_scale(handle.model(**inputs).logits, expected[seed])
    layer = handle.layers["transformer.h.0.attn.c_attn"]
    kept = layer._backup[0]
    handle.restore()
    handle.merge()
    assert layer._backup[0] is kept  # no new copy of the originals for a switch
    handle.restore()
    for name, p in handle.model.named_parameters():
        if not name.endswith(".ia3"):  # the vectors changed on purpose; the base must not have
            assert torch.equal(p, original[name]), name
    handle.release_backups()
    assert layer._backup is None


def test_originals_are_retaken_when_the_base_weights_change(tiny_model_dir):
    handle = inject(load(tiny_model_dir, "llama"))
    randomise(handle)
    handle.merge()
    handle.restore()
    layer = handle.layers["model.layers.0.self_attn.k_proj"]
    with torch.no_grad():
        layer.base.weight.add_(0.25)  # someone edits the base weights in place (e.g. a full fine-tune)
    edited = layer.base.weight.detach().clone()
    handle.merge()
    torch.testing.assert_close(layer.base.weight, edited * layer.ia3.detach()[:, None], rtol=0, atol=0)
    handle.restore()
    assert torch.equal(layer.base.weight, edited)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
def test_merge_and_restore_on_cuda(tiny_model_dir, dtype):
    handle = inject(load(tiny_model_dir, "t0", dtype=dtype).to("cuda"))
    randomise(handle)
    before = snapshot(handle.model)
    inputs = {k: v.to("cuda") for k, v in batch("t0").items()}
    with torch.no_grad():
        unmerged = handle.model(**inputs).logits.float()
        handle.merge()
        merged = handle.model(**inputs).logits.float()
    tol = 1e-5 if dtype == torch.float32 else 0.05
    assert (merged - unmerged).abs().max().item() <= tol * max(1.0, unmerged.abs().max().item())
    handle.restore()
    assert_bit_equal(handle.model, before)


def test_report_and_vectors_are_the_same_when_merged(tiny_model_dir):
    from ia3app.adapters.params import parameter_report

    handle = inject(load(tiny_model_dir, "bart"))
    randomise(handle)
    unmerged_report, vectors = parameter_report(handle), handle.vectors()
    handle.merge()
    assert parameter_report(handle) == unmerged_report
    assert all(torch.equal(handle.vectors()[k], v) for k, v in vectors.items())
    assert len(handle.trainable_parameters()) == len(handle.layers)
