"""In-context prompt building: demonstrations, fitting the limit, determinism, forced k."""

import pytest
from transformers import ByT5Tokenizer, GPT2Config, T5Config

from ia3app.errors import UserError
from ia3app.example import Example
from ia3app.evaluation.in_context import IclConfig, build_prompts, input_limit

CHOICES = ("negative", "positive")


@pytest.fixture(scope="module")
def tok():
    return ByT5Tokenizer()  # one token per byte, plus EOS


def train_rows(n=20):
    return [Example(f"review number {i:02d}", CHOICES, i % 2) for i in range(n)]


def test_prompt_layout_demos_then_query(tok):
    train = train_rows(3)
    query = Example("the query", CHOICES, 1)
    out = build_prompts(train, [query], tok, limit=1000, decoder_only=False, config=IclConfig(seed=1))
    assert out.shots == 3
    prompt = out.examples[0].input
    blocks = prompt.split("\n\n")
    assert blocks[-1] == "the query"
    for block, i in zip(blocks[:-1], out.demo_indices[0], strict=True):
        assert block == f"{train[i].input}\n{CHOICES[train[i].label]}"
    assert out.examples[0].choices == CHOICES and out.examples[0].label == 1
    assert out.prompt_tokens == [len(prompt.encode()) + 1]


def test_as_many_as_fit_and_never_over_limit(tok):
    train = train_rows(20)
    queries = [Example("short", CHOICES, 0), Example("a much longer query text here", CHOICES, 1)]
    out = build_prompts(train, queries, tok, limit=120, decoder_only=False)
    assert max(out.prompt_tokens) <= 120
    demo_len = len("review number 00\nnegative\n\n".encode())
    # each prompt takes as many as fit beside its own query: one more would not fit
    for n in out.prompt_tokens:
        assert n + demo_len > 120
    short, long = map(len, out.demo_indices)
    assert short > long >= 1 and out.min_shots == long and out.shots == round((short + long) / 2, 1)
    assert out.demo_indices[1] == out.demo_indices[0][:long]  # the same seeded order


def test_decoder_only_reserves_room_for_choices(tok):
    train = train_rows(20)
    q = [Example("query", CHOICES, 0)]
    enc = build_prompts(train, q, tok, limit=150, decoder_only=False)
    dec = build_prompts(train, q, tok, limit=150, decoder_only=True)
    assert max(dec.prompt_tokens) + len("positive") <= 150
    assert dec.shots <= enc.shots


def test_seeded_and_deterministic(tok):
    train = train_rows(20)
    q = [Example("query", CHOICES, 0)]
    a = build_prompts(train, q, tok, limit=200, decoder_only=False, config=IclConfig(seed=3))
    b = build_prompts(train, q, tok, limit=200, decoder_only=False, config=IclConfig(seed=3))
    c = build_prompts(train, q, tok, limit=200, decoder_only=False, config=IclConfig(seed=4))
    assert a.examples == b.examples and a.demo_indices == b.demo_indices
    assert a.demo_indices != c.demo_indices


def test_forced_shots_cycle_through_training_rows(tok):
    train = train_rows(5)
    out = build_prompts(train, [Example("q", CHOICES, 0)], tok, limit=64, decoder_only=False, config=IclConfig(shots=16))
    assert out.shots == 16 and isinstance(out.shots, int) and len(out.demo_indices[0]) == 16
    assert sorted(set(out.demo_indices[0])) == [0, 1, 2, 3, 4]
    assert out.examples[0].input.count("\n\n") == 16  # forced k ignores the limit


def test_unlabelled_training_rows_are_not_demonstrations(tok):
    with pytest.raises(UserError, match="labelled"):
        build_prompts([Example("x", CHOICES, None)], [Example("q", CHOICES)], tok, limit=100, decoder_only=False)
    zero = build_prompts([], [Example("q", CHOICES)], tok, limit=100, decoder_only=False, config=IclConfig(shots=0))
    assert zero.examples[0].input == "q"


def test_input_limit(tok):
    assert input_limit(T5Config(), tok) == 1024  # relative positions: the cap
    assert input_limit(T5Config(), tok, cap=512) == 512
    assert input_limit(GPT2Config(n_positions=256), tok) == 256
    tok2 = ByT5Tokenizer(model_max_length=300)
    assert input_limit(GPT2Config(), tok2) == 300
    assert input_limit(T5Config(), tok2) == 1024  # a T5 tokenizer's 512 is not a position limit


def test_config_validation():
    with pytest.raises(UserError, match="shots"):
        IclConfig(shots=-1)
