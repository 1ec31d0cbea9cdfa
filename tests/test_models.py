"""load_model: tiny models through the real from_pretrained path, and every user-fixable failure."""

import json

import pytest
import torch

from ia3app.errors import UserError
from ia3app.models import default_device, load_model


@pytest.mark.parametrize("kind, enc_dec", [("t0", True), ("bart", True), ("gpt2", False), ("llama", False)])
def test_loads_tiny_models_in_eval_mode(tiny_model_dir, kind, enc_dec):
    path = tiny_model_dir(kind)
    loaded = load_model(str(path), device="cpu")
    assert loaded.is_encoder_decoder is enc_dec
    assert loaded.model.training is False
    assert loaded.device == "cpu" and loaded.name == str(path) and loaded.revision is None
    assert loaded.num_parameters == sum(p.numel() for p in loaded.model.parameters()) > 0
    assert loaded.tokenizer.pad_token_id is not None
    assert next(loaded.model.parameters()).dtype == torch.float32


def test_dtype_option(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir("t0")), device="cpu", dtype="bf16")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    with pytest.raises(UserError, match="unknown dtype"):
        load_model(str(tiny_model_dir("t0")), device="cpu", dtype="int3")


def test_missing_local_path(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_model(str(tmp_path / "nope"))


def test_folder_without_config(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        load_model(str(tmp_path))


def test_hub_id_offline_is_one_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as info:
        load_model("bigscience/T0_3B_not_cached_here")
    message = str(info.value)
    assert "could not fetch 'bigscience/T0_3B_not_cached_here' from the Hugging Face hub" in message
    assert "pass a local path" in message and "tiny demo model" in message


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    with pytest.raises(UserError, match="unsupported architecture"):
        load_model(str(tmp_path))


def test_default_device():
    assert default_device() == ("cuda" if torch.cuda.is_available() else "cpu")
