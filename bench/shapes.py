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


def sentencepiece_like_tokenizer(vocab_size: int = 4000):
    """A subword tokenizer trained here, offline, on the repository's few-shot CSVs.

    Like T5's SentencePiece model: Metaspace pre-tokenisation ('▁' marks word starts), a BPE
    vocabulary learned from text, ids 0/1/2 = pad/EOS/unk, and EOS appended to every text. The
    vocabulary is smaller than T5's 32k (the corpus is small), so token counts per text are a
    little higher than T0's tokenizer gives: realistic few-shot lengths, not bytes.
    """
    import csv
    from pathlib import Path

    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers, decoders
    from transformers import PreTrainedTokenizerFast

    texts = []
    for path in sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.reader(f):
                texts.append(" ".join(row))
    if not texts:
        raise RuntimeError("examples/*.csv not found: the tokenizer is trained on them")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def fewshot_examples(name: str = "rte"):
    """Rows of examples/<name>_32shot_seed0.csv rendered by a T0-style prompt, as Examples."""
    import csv
    from pathlib import Path

    from ia3app.example import Example

    path = Path(__file__).resolve().parent.parent / "examples" / f"{name}_32shot_seed0.csv"
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if name == "rte":
        return [Example(f"{r['premise']}\nQuestion: {r['hypothesis']} True or False?", ("True", "False"),
                        0 if r["label"] == "entailment" else 1) for r in rows]
    if name == "copa":
        return [Example(f"{r['premise']} What was the {'cause' if r['question'] == 'cause' else 'result'}?",
                        (r["choice1"], r["choice2"]), int(r["label"])) for r in rows]
    raise ValueError(f"unknown few-shot set {name!r}")
