"""(IA)^3 injection across architectures: placement, identity at init, what trains and is saved."""

import pytest
import torch
from tiny_batches import load_tiny, token_batch
from transformers import BertConfig, BertModel

from ia3app.errors import UserError
from ia3app.adapters.ia3 import Ia3Layer, Ia3Spec, inject, is_ia3_parameter

KINDS = ("t0", "t5", "bart", "gpt2", "llama")
D, FF, LAYERS = 64, 128, 2  # the tiny models' defaults


def load(tiny_model_dir, kind):
    return load_tiny(tiny_model_dir, kind)


def batch(kind, seed=0):
    return token_batch(kind, seed=seed)


def expected_layers(kind):
    """{module path: (position, features)} written out by hand for each tiny architecture."""
    out = {}
    if kind in ("t0", "t5"):
        ffn = ("DenseReluDense.wi_1", "output") if kind == "t0" else ("DenseReluDense.wo", "input")
        for stack, n_attn in (("encoder", 1), ("decoder", 2)):
            for i in range(LAYERS):
                attn = ["SelfAttention", "EncDecAttention"][:n_attn]
                for j, a in enumerate(attn):
                    for kv in "kv":
                        out[f"{stack}.block.{i}.layer.{j}.{a}.{kv}"] = ("output", D)
                out[f"{stack}.block.{i}.layer.{n_attn}.{ffn[0]}"] = (ffn[1], FF)
    elif kind == "bart":
        for stack in ("encoder", "decoder"):
            for i in range(LAYERS):
                attn = ["self_attn"] + (["encoder_attn"] if stack == "decoder" else [])
                for a in attn:
                    for p in ("k_proj", "v_proj"):
                        out[f"model.{stack}.layers.{i}.{a}.{p}"] = ("output", D)
                out[f"model.{stack}.layers.{i}.fc2"] = ("input", FF)
    elif kind == "gpt2":
        for i in range(LAYERS):
            out[f"transformer.h.{i}.attn.c_attn"] = ("fused_kv", 2 * D)  # k and v thirds only
            out[f"transformer.h.{i}.mlp.c_proj"] = ("input", FF)
    elif kind == "llama":
        for i in range(LAYERS):
            # grouped-query attention: 4 heads, 2 kv heads -> k/v width 2 * 16 = 32
            out[f"model.layers.{i}.self_attn.k_proj"] = ("output", D // 2)
            out[f"model.layers.{i}.self_attn.v_proj"] = ("output", D // 2)
            out[f"model.layers.{i}.mlp.down_proj"] = ("input", FF)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_placement_is_exactly_the_table(tiny_model_dir, kind):
    handle = inject(load(tiny_model_dir, kind))
    got = {name: (layer.position, layer.features) for name, layer in handle.layers.items()}
    assert got == expected_layers(kind)
    assert handle.family == {"t0": "t5-gated"}.get(kind, kind)
    for name, layer in handle.layers.items():
        assert handle.model.get_submodule(name) is layer
        assert torch.equal(layer.ia3, torch.ones(layer.features))


@pytest.mark.parametrize("kind", KINDS)
def test_identity_at_init_is_exact(tiny_model_dir, kind):
    model = load(tiny_model_dir, kind)
    inputs = batch(kind)
    with torch.no_grad():
        base = model(**inputs).logits
        inject(model)
        adapted = model(**inputs).logits
    assert torch.equal(base, adapted)


@pytest.mark.parametrize("kind", KINDS)
def test_only_vectors_train_and_are_saved(tiny_model_dir, kind):
    handle = inject(load(tiny_model_dir, kind))
    expected_keys = {f"{name}.ia3" for name in expected_layers(kind)}
    trainable = {n for n, p in handle.model.named_parameters() if p.requires_grad}
    assert trainable == expected_keys
    assert {n for n, _ in handle.model.named_parameters() if is_ia3_parameter(n)} == expected_keys
    assert set(handle.vectors()) == expected_keys
    assert {id(p) for p in handle.trainable_parameters()} == {id(layer.ia3) for layer in handle.layers.values()}
    # a backward pass reaches every vector and nothing else
    out = handle.model(**batch(kind)).logits
    out.float().pow(2).mean().backward()
    for name, p in handle.model.named_parameters():
        assert (p.grad is not None) == (name in expected_keys), name


def test_vectors_change_the_function(tiny_model_dir):
    handle = inject(load(tiny_model_dir, "gpt2"))
    inputs = batch("gpt2")
    with torch.no_grad():
        base = handle.model(**inputs).logits
        layer = handle.layers["transformer.h.0.attn.c_attn"]
        layer.ia3.fill_(0.5)
        assert not torch.allclose(handle.model(**inputs).logits, base)


def test_gpt2_queries_are_never_scaled(tiny_model_dir):
    handle = inject(load(tiny_model_dir, "gpt2"))
    layer = handle.layers["transformer.h.0.attn.c_attn"]
    x = torch.randn(2, 3, D)  # (B, T, d)
    with torch.no_grad():
        layer.ia3.uniform_(0.5, 1.5)
        y = layer(x)  # (B, T, 3d)
        plain = layer.base(x)
    assert torch.equal(y[..., :D], plain[..., :D])
    torch.testing.assert_close(y[..., D:], plain[..., D:] * layer.ia3, rtol=0, atol=0)


def test_unsupported_architecture_names_families_and_spec_usage():
    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    with pytest.raises(UserError) as info:
        inject(model)
    message = str(info.value)
    for family in ("t5", "bart", "gpt2", "llama", "mistral"):
        assert family in message
    assert "Ia3Spec(" in message and "output_modules" in message


def test_explicit_spec_overrides_the_table():
    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64))
    spec = Ia3Spec(output_modules=r".*attention\.self\.(key|value)", input_modules=r".*output\.dense")
    handle = inject(model, spec)
    assert handle.family == "custom"
    positions = {name: layer.position for name, layer in handle.layers.items()}
    assert positions["encoder.layer.1.attention.self.key"] == "output"
    assert positions["encoder.layer.0.output.dense"] == "input"
    assert handle.layers["encoder.layer.0.output.dense"].features == 64
    assert len(positions) == 2 * 4  # key, value, attention.output.dense, output.dense per layer


def test_explicit_spec_on_a_supported_model_replaces_defaults(tiny_model_dir):
    handle = inject(load(tiny_model_dir, "llama"), Ia3Spec(output_modules=r".*self_attn\.v_proj"))
    assert sorted(handle.layers) == ["model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.v_proj"]


def test_bad_specs_are_user_errors(tiny_model_dir):
    with pytest.raises(UserError, match="not a valid regular expression"):
        Ia3Spec(output_modules="(")
    with pytest.raises(UserError, match="names no modules"):
        Ia3Spec()
    with pytest.raises(UserError, match="matches the"):
        inject(load(tiny_model_dir, "t0"), Ia3Spec(output_modules=r"nothing\.here"))
    with pytest.raises(UserError, match="only linear layers"):
        inject(load(tiny_model_dir, "t0"), Ia3Spec(output_modules=r"shared"))


def test_inject_twice_is_refused(tiny_model_dir):
    model = load(tiny_model_dir, "t0")
    inject(model)
    with pytest.raises(UserError, match="already has"):
        inject(model)
    assert all(not isinstance(m.base, Ia3Layer) for m in model.modules() if isinstance(m, Ia3Layer))


def test_inject_into_a_merged_or_unloaded_model(tiny_model_dir):
    model = load(tiny_model_dir, "llama")
    handle = inject(model)
    handle.merge()  # the plain layers are back in the tree, but the model is still adapted
    with pytest.raises(UserError, match="already has"):
        inject(model)
    plain = handle.unload(merge=False)
    again = inject(plain)  # after unload the model is plain and can be adapted afresh
    assert set(again.layers) == set(expected_layers("llama"))
