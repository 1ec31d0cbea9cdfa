"""PEFT export: PeftModel.from_pretrained(base, folder) computes our adapter's function."""

import json

import pytest
import torch
from tiny_batches import load_tiny, token_batch

peft = pytest.importorskip("peft")

from ia3app.errors import UserError  # noqa: E402
from ia3app.adapters.ia3 import Ia3Spec, inject  # noqa: E402
from ia3app.adapters.peft_export import PEFT_CONFIG_NAME, export_peft, load_peft_vectors  # noqa: E402



def load(tiny_model_dir, kind):
    return load_tiny(tiny_model_dir, kind)


def inputs_for(kind):
    return token_batch(kind, length=8, seed=3)


def trained_handle(tiny_model_dir, kind, spec=None):
    handle = inject(load(tiny_model_dir, kind), spec)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in handle.layers.values():
            layer.ia3.copy_(torch.empty(layer.features).uniform_(0.3, 1.7, generator=g))
    return handle


def assert_close_to_scale(actual, expected, tol=1e-5):
    scale = max(1.0, expected.abs().max().item())
    assert (actual - expected).abs().max().item() <= tol * scale


@pytest.mark.parametrize("kind", ("t0", "t5", "bart", "gpt2", "llama"))
def test_peft_loads_the_export_and_matches_our_logits(tiny_model_dir, tmp_path, kind):
    handle = trained_handle(tiny_model_dir, kind)
    inputs = inputs_for(kind)
    with torch.no_grad():
        ours = handle.model(**inputs).logits
        base_logits = load(tiny_model_dir, kind)(**inputs).logits
    folder = export_peft(handle, tmp_path / "peft", base_model=str(tiny_model_dir(kind)))

    peft_model = peft.PeftModel.from_pretrained(load(tiny_model_dir, kind), folder).eval()
    with torch.no_grad():
        theirs = peft_model(**inputs).logits
    assert_close_to_scale(theirs, ours)
    assert (theirs - base_logits).abs().max() > 1e-3  # the vectors really are applied
    # PEFT wrapped exactly our modules
    wrapped = {n for n, m in peft_model.named_modules() if isinstance(m, peft.tuners.ia3.IA3Layer)}
    assert {n.removeprefix("base_model.model.") for n in wrapped} == set(handle.layers)
    # and the folder reads back as our vectors
    fresh = inject(load(tiny_model_dir, kind))
    fresh.load_vectors(load_peft_vectors(folder, fresh))
    for key, value in handle.vectors().items():
        torch.testing.assert_close(fresh.vectors()[key], value, rtol=0, atol=0)


def test_t5_gated_ffn_vector_scales_the_output_of_wi_1(tiny_model_dir, tmp_path):
    config = json.loads((export_peft(trained_handle(tiny_model_dir, "t0"), tmp_path, "tiny") / PEFT_CONFIG_NAME).read_text())
    assert "encoder.block.0.layer.1.DenseReluDense.wi_1" in config["target_modules"]
    assert config["feedforward_modules"] == []  # wi_1 is output-scaled, like T-Few
    assert config["task_type"] == "SEQ_2_SEQ_LM" and config["peft_type"] == "IA3"
    v10 = json.loads((export_peft(trained_handle(tiny_model_dir, "t5"), tmp_path / "v10", "tiny") / PEFT_CONFIG_NAME).read_text())
    assert "decoder.block.1.layer.2.DenseReluDense.wo" in v10["feedforward_modules"]


def test_gpt2_export_keeps_queries_unscaled(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    handle = trained_handle(tiny_model_dir, "gpt2")
    folder = export_peft(handle, tmp_path, "tiny-gpt2")
    config = json.loads((folder / PEFT_CONFIG_NAME).read_text())
    assert config["fan_in_fan_out"] is True and config["task_type"] == "CAUSAL_LM"
    tensors = load_file(folder / "adapter_model.safetensors")
    c_attn = tensors["base_model.model.transformer.h.0.attn.c_attn.ia3_l"]  # (3d, 1)
    assert c_attn.shape == (192, 1) and torch.equal(c_attn[:64], torch.ones(64, 1))
    assert tensors["base_model.model.transformer.h.0.mlp.c_proj.ia3_l"].shape == (1, 128)
    # a PEFT vector that scales the queries has no (IA)^3 equivalent here
    c_attn[0] = 2.0
    from safetensors.torch import save_file

    save_file(tensors, folder / "adapter_model.safetensors")
    with pytest.raises(UserError, match="scales the queries"):
        load_peft_vectors(folder, inject(load(tiny_model_dir, "gpt2")))


def test_impossible_exports_are_refused(tiny_model_dir, tmp_path):
    mixed = Ia3Spec(fused_kv_modules=r".*attn\.c_attn", output_modules=r"lm_head")  # Conv1D + nn.Linear
    with pytest.raises(UserError, match="mixes nn.Linear and Conv1D"):
        export_peft(inject(load(tiny_model_dir, "gpt2"), mixed), tmp_path, "tiny")
    assert not any(tmp_path.iterdir())


def test_merged_handle_exports_its_vectors(tiny_model_dir, tmp_path):
    handle = trained_handle(tiny_model_dir, "llama")
    inputs = inputs_for("llama")
    handle.merge()
    with torch.no_grad():
        merged = handle.model(**inputs).logits
    handle.restore()  # PEFT needs the plain base weights, which we load fresh anyway
    folder = export_peft(handle, tmp_path, "tiny")
    peft_model = peft.PeftModel.from_pretrained(load(tiny_model_dir, "llama"), folder).eval()
    with torch.no_grad():
        assert_close_to_scale(peft_model(**inputs).logits, merged)
