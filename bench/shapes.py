"""Random models of published shapes, built in memory for benchmarks (no download, no weights).

Shapes follow the T5 v1.1 / T0 family (gated-GELU FFN, untied head). A ByT5 tokenizer
(bytes as tokens) is used as-is: its ids are a subset of every vocabulary here, so texts
of N bytes become N tokens, which makes token counts easy to control.
"""

from __future__ import annotations

import random

import torch
from transformers import ByT5Tokenizer, T5Config, T5ForConditionalGeneration

SHAPES = {
    # The brief's "T5-small-shaped (60M)": d_model 512, 6+6 layers, 8 heads, d_ff 2048 gated.
    "t5-small": dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8),
    # T0-3B = T5 v1.1 XL + LM adaptation: d_model 2048, 24+24 layers, 32 heads of 64, d_ff 5120.
    "t0-3b": dict(d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32),
    # A tiny stand-in for --dry-run.
    "tiny": dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4),
}


def t5_config(shape: str, vocab_size: int = 32128) -> T5Config:
    sizes = SHAPES[shape]
    return T5Config(
        **sizes,
        num_decoder_layers=sizes["num_layers"],
        vocab_size=vocab_size,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.1,  # T0's config: the recipe trains with dropout on
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def random_t5(shape: str, device: str = "cpu", dtype=torch.float32, seed: int = 0) -> T5ForConditionalGeneration:
    """A randomly initialised model of `shape`, built directly on `device` in `dtype`."""
    torch.manual_seed(seed)
    config = t5_config(shape)
    with torch.device(device):
        model = T5ForConditionalGeneration(config)
    return model.to(dtype).eval()


def tokenizer() -> ByT5Tokenizer:
    return ByT5Tokenizer()


def random_text(rng: random.Random, n_bytes: int) -> str:
    """Lower-case pseudo-words, exactly n_bytes long (one token per byte with ByT5)."""
    words = []
    size = 0
    while size < n_bytes:
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:n_bytes]
