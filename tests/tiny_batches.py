"""Helpers shared by the (IA)^3 tests: load a tiny model by kind, make a seeded token batch."""

import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

DECODER_ONLY = ("gpt2", "llama")


def load_tiny(tiny_model_dir, kind, dtype=None, **sizes):
    """The tiny model of `kind` through from_pretrained, in eval mode."""
    cls = AutoModelForCausalLM if kind in DECODER_ONLY else AutoModelForSeq2SeqLM
    extra = {} if dtype is None else {"dtype": dtype}
    return cls.from_pretrained(tiny_model_dir(kind, **sizes), **extra).eval()


def token_batch(kind, *, rows=2, length=7, decoder_length=5, seed=0):
    """Random token ids (B, T); encoder-decoder kinds also get decoder_input_ids (B, T_dec)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 300, (rows, length), generator=g)  # (B, T)
    if kind in DECODER_ONLY:
        return {"input_ids": ids}
    return {"input_ids": ids, "decoder_input_ids": torch.randint(3, 300, (rows, decoder_length), generator=g)}
