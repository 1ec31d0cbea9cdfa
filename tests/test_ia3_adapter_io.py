"""Adapter folders: safetensors + ia3_config.json; only safetensors load; mismatches are clear errors."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_batches import DECODER_ONLY, load_tiny

from ia3app import __version__
from ia3app.adapters.files import CONFIG_NAME, WEIGHTS_NAME, apply_adapter, load_adapter, save_adapter
from ia3app.errors import UserError
from ia3app.adapters.ia3 import Ia3Spec, inject


def handle_for(tiny_model_dir, kind, spec=None, **sizes):
    return inject(load_tiny(tiny_model_dir, kind, **sizes), spec)


def randomise(handle, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in handle.layers.values():
            layer.ia3.copy_(torch.empty(layer.features).uniform_(0.5, 1.5, generator=g))


@pytest.mark.parametrize("kind", ("t0", "t5", "bart", "gpt2", "llama"))
def test_round_trip_reproduces_the_function(tiny_model_dir, tmp_path, kind):
    trained = handle_for(tiny_model_dir, kind)
    randomise(trained)
    extra = {"template": "{{text}}", "choices": ["no", "yes"], "recipe": {"steps": 3}, "metrics": {"acc": 0.5}}
    out = save_adapter(trained, tmp_path / "ad", base_model=f"tiny-{kind}", revision="abc123", extra=extra)
    assert sorted(p.name for p in out.iterdir()) == [WEIGHTS_NAME, CONFIG_NAME]
    # the file holds exactly the vectors: the saved keys are the (IA)^3 parameter names
    saved = load_file(out / WEIGHTS_NAME)
    assert set(saved) == {n for n, p in trained.model.named_parameters() if p.requires_grad}
    assert all(v.dtype == torch.float32 and v.dim() == 1 for v in saved.values())

    fresh = handle_for(tiny_model_dir, kind)
    config = apply_adapter(fresh, out)
    for key, value in trained.vectors().items():
        assert torch.equal(fresh.vectors()[key], value)
    assert config["template"] == "{{text}}" and config["metrics"] == {"acc": 0.5}
    ids = torch.randint(3, 300, (2, 6))
    inputs = {"input_ids": ids} if kind in DECODER_ONLY else {"input_ids": ids, "decoder_input_ids": ids[:, :3]}
    with torch.no_grad():
        assert torch.equal(fresh.model(**inputs).logits, trained.model(**inputs).logits)


def test_config_records_what_the_vectors_need(tiny_model_dir, tmp_path):
    handle = handle_for(tiny_model_dir, "llama")
    save_adapter(handle, tmp_path, base_model="org/tiny-llama", revision=None, extra={"choices": ["a"]})
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["format"] == "ia3app-adapter" and config["format_version"] == 1
    assert config["ia3app_version"] == __version__
    assert config["base_model"] == "org/tiny-llama" and config["revision"] is None
    assert config["architecture"] == "LlamaForCausalLM" and config["model_type"] == "llama"
    assert config["family"] == "llama"
    assert config["spec"]["input_modules"] == handle.spec.input_modules
    assert config["modules"][0] == {"name": "model.layers.0.self_attn.k_proj", "position": "output", "features": 32}
    fp = config["fingerprint"]
    assert fp["hidden_size"] == 64 and fp["num_hidden_layers"] == 2 and fp["vocab_size"] == 384
    assert fp["num_key_value_heads"] == 2
    assert config["num_parameters"] == handle.num_added_parameters()
    assert config["choices"] == ["a"]
    with pytest.raises(ValueError, match="reserved"):
        save_adapter(handle, tmp_path, base_model="x", extra={"family": "t5"})


def test_merged_handle_switches_adapters_without_double_scaling(tiny_model_dir, tmp_path):
    a = handle_for(tiny_model_dir, "t0")
    randomise(a, seed=1)
    save_adapter(a, tmp_path / "a", base_model="tiny")
    serving = handle_for(tiny_model_dir, "t0")
    base = {n: p.detach().clone() for n, p in serving.model.named_parameters()}
    serving.merge()
    apply_adapter(serving, tmp_path / "a")
    assert serving.merged
    serving.restore()
    for name, p in serving.model.named_parameters():
        if not name.endswith(".ia3"):
            assert torch.equal(p, base[name]), name


def test_mismatched_base_is_a_clear_error(tiny_model_dir, tmp_path):
    save_adapter(handle_for(tiny_model_dir, "t0"), tmp_path / "t0", base_model="tiny-t0")
    with pytest.raises(UserError, match=r"'tiny-t0' and does not fit.*architecture is 'T5ForConditionalGeneration'"):
        apply_adapter(handle_for(tiny_model_dir, "llama"), tmp_path / "t0")
    with pytest.raises(UserError, match="family is 't5-gated', this model is 't5'"):
        apply_adapter(handle_for(tiny_model_dir, "t5"), tmp_path / "t0")
    with pytest.raises(UserError, match="d_ff 128 vs 256 here"):
        apply_adapter(handle_for(tiny_model_dir, "t0", d_ff=256), tmp_path / "t0")
    with pytest.raises(UserError, match="modules differ"):
        apply_adapter(handle_for(tiny_model_dir, "t0", Ia3Spec(output_modules=r".*SelfAttention\.k")), tmp_path / "t0")


def test_only_safetensors_are_loaded(tiny_model_dir, tmp_path):
    handle = handle_for(tiny_model_dir, "gpt2")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save(handle.vectors(), pickled / "adapter.bin")
    with pytest.raises(UserError, match="adapter.bin but no adapter.safetensors; only safetensors"):
        load_adapter(pickled)
    with pytest.raises(UserError, match="pickle file; only safetensors"):
        load_adapter(pickled / "adapter.bin")
    with pytest.raises(UserError, match="does not exist"):
        load_adapter(tmp_path / "nowhere")
    peft_like = tmp_path / "peft"
    peft_like.mkdir()
    save_file({"x": torch.ones(1)}, peft_like / "adapter_model.safetensors")
    with pytest.raises(UserError, match="PEFT adapter folder"):
        load_adapter(peft_like)


def test_damaged_folders_are_clear_errors(tiny_model_dir, tmp_path):
    handle = handle_for(tiny_model_dir, "bart")
    out = save_adapter(handle, tmp_path / "ad", base_model="tiny-bart")
    vectors, _ = load_adapter(out / WEIGHTS_NAME)  # the file path works too
    assert set(vectors) == set(handle.vectors())
    vectors.pop(next(iter(vectors)))
    save_file(vectors, out / WEIGHTS_NAME)
    with pytest.raises(UserError, match="disagree on the vectors"):
        load_adapter(out)
    (out / WEIGHTS_NAME).write_bytes(b"not a safetensors file at all")
    with pytest.raises(UserError, match="not a readable safetensors"):
        load_adapter(out)
    (out / CONFIG_NAME).write_text("{oops")
    with pytest.raises(UserError, match="not valid JSON"):
        load_adapter(out)
    (out / CONFIG_NAME).write_text(json.dumps({"format": "ia3app-adapter", "format_version": 99}))
    with pytest.raises(UserError, match="Upgrade ia3app"):
        load_adapter(out)
    (out / CONFIG_NAME).unlink()
    with pytest.raises(UserError, match="base model is unknown"):
        load_adapter(out)
