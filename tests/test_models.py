"""load_model: tiny models through the real from_pretrained path, and every user-fixable failure."""

import json

import pytest
import torch

from ia3app.errors import UserError
from ia3app.backbones.loading import default_device, load_model


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


def test_decoder_only_tokenizer_without_pad_gets_eos(tiny_model_dir, tmp_path):
    """GPT-2-style tokenizers ship without a pad token: scoring needs one, so pad = eos."""
    import shutil

    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    model_dir = tmp_path / "gpt2-nopad"
    shutil.copytree(tiny_model_dir("gpt2"), model_dir)
    for f in model_dir.glob("*token*"):
        f.unlink()
    vocab = {"<unk>": 0, "</s>": 1, **{w: i + 2 for i, w in enumerate("the film was good bad".split())}}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>")
    assert tok.pad_token is None
    tok.save_pretrained(model_dir)

    loaded = load_model(str(model_dir), device="cpu")
    assert loaded.tokenizer.pad_token_id == loaded.tokenizer.eos_token_id == 1
    assert loaded.tokenizer.padding_side == "right"


def test_precision_sets_the_weights_dtype_of_every_linear(tiny_model_dir):
    from ia3app.backbones.loading import weights_dtype

    assert weights_dtype("auto", "cpu") == torch.float32 and weights_dtype(None, "cpu") == torch.float32
    assert weights_dtype("bf16", "cpu") == torch.bfloat16 and weights_dtype("fp32", "cuda") == torch.float32
    loaded = load_model(str(tiny_model_dir("t0")), device="cpu", precision="bf16")
    dtypes = {name: p.dtype for name, p in loaded.model.named_parameters()}
    assert set(dtypes.values()) == {torch.bfloat16}, {n: d for n, d in dtypes.items() if d != torch.bfloat16}
    assert any(".wo." in n for n in dtypes)  # T5's FFN output projection, which transformers keeps in fp32
    assert loaded.dtype == torch.bfloat16
    assert load_model(str(tiny_model_dir("t0")), device="cpu").dtype == torch.float32  # auto on a CPU
    with pytest.raises(UserError, match="unknown precision"):
        load_model(str(tiny_model_dir("t0")), device="cpu", precision="fp8")
