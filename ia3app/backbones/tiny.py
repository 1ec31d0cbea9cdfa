"""Tiny random models, built offline, for tests and demos.

Each is saved with ``save_pretrained`` (weights as safetensors, plus a byte-level ByT5
tokenizer that needs no vocabulary file), so it is loaded back through exactly the same
``from_pretrained`` path as a hub model. Random weights: useful to try the app and to test
code paths, not to make real predictions.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    ByT5Tokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from ia3app.errors import UserError

KINDS = ("t0", "t5", "bart", "gpt2", "llama")
VOCAB = 384  # ByT5: 3 special tokens + 256 bytes + 125 extra ids
PAD, EOS = 0, 1


def tiny_config(kind: str, d_model: int = 64, layers: int = 2, heads: int = 4, d_ff: int = 128):
    """A transformers config of the given family, small enough for CPU tests."""
    common = dict(vocab_size=VOCAB, pad_token_id=PAD, eos_token_id=EOS)
    if kind in ("t0", "t5"):
        return T5Config(
            d_model=d_model,
            d_kv=d_model // heads,
            d_ff=d_ff,
            num_layers=layers,
            num_decoder_layers=layers,
            num_heads=heads,
            relative_attention_num_buckets=8,
            dropout_rate=0.0,
            # "t0": T5 v1.1 / T0 (gated GELU FFN, untied head); "t5": T5 v1.0 (ReLU, tied).
            feed_forward_proj="gated-gelu" if kind == "t0" else "relu",
            tie_word_embeddings=kind == "t5",
            decoder_start_token_id=PAD,
            **common,
        )
    if kind == "bart":
        return BartConfig(
            d_model=d_model,
            encoder_layers=layers,
            decoder_layers=layers,
            encoder_attention_heads=heads,
            decoder_attention_heads=heads,
            encoder_ffn_dim=d_ff,
            decoder_ffn_dim=d_ff,
            max_position_embeddings=1024,
            dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
            bos_token_id=EOS,
            decoder_start_token_id=EOS,
            forced_eos_token_id=None,
            **common,
        )
    if kind == "gpt2":
        return GPT2Config(
            n_embd=d_model,
            n_layer=layers,
            n_head=heads,
            n_inner=d_ff,
            n_positions=1024,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=EOS,
            **common,
        )
    if kind == "llama":
        return LlamaConfig(
            hidden_size=d_model,
            intermediate_size=d_ff,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=max(1, heads // 2),  # grouped-query attention
            max_position_embeddings=1024,
            bos_token_id=EOS,
            **common,
        )
    raise UserError(f"unknown tiny model kind {kind!r}; choose one of: {', '.join(KINDS)}")


_MODEL_CLASS = {
    "t0": T5ForConditionalGeneration,
    "t5": T5ForConditionalGeneration,
    "bart": BartForConditionalGeneration,
    "gpt2": GPT2LMHeadModel,
    "llama": LlamaForCausalLM,
}


TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
"""An instruct model's chat template in miniature (ChatML-like tags), for tests of TemplateSpec.chat."""


def make_tiny_model(kind: str, out_dir: str | Path, seed: int = 0, chat: bool = False, **sizes) -> Path:
    """Build a tiny random model of `kind`, save it (safetensors) with a ByT5 tokenizer (with a chat
    template when `chat`, as instruct models ship one)."""
    config = tiny_config(kind, **sizes)
    torch.manual_seed(seed)
    model = _MODEL_CLASS[kind](config).eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer = ByT5Tokenizer()
    if chat:
        tokenizer.chat_template = TINY_CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    return out
