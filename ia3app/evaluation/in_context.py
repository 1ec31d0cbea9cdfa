"""In-context learning baseline: demonstrations from the training rows, then the query.

A prompt is k demonstrations ("input", newline, its correct choice) joined by blank lines,
followed by the query's own input; the query's answer choices are then ranked by the same rank
classification as zero-shot and T-Few. Demonstrations are drawn once per evaluation with a
seeded shuffle; each prompt keeps as many of them, in that order, as fit the model's input
limit beside its query (or exactly `shots`, for benchmarks that fix k).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

from ia3app.errors import UserError
from ia3app.example import Example

HUGE = 10**9  # tokenizers without a real limit report ~1e30


@dataclass
class IclConfig:
    """How in-context prompts are built."""

    shots: int | None = None
    """Exactly this many demonstrations (cycling through the training rows if there are fewer);
    None: as many as fit the input limit."""
    max_input_tokens: int = 1024
    """Cap on the prompt length. Models with relative positions (T5 family) have no intrinsic
    limit, so this is their budget; for others the limit is min(cap, the model's positions)."""
    seed: int = 0
    """Seeds which training rows become demonstrations and their order."""
    answer_separator: str = "\n"
    """Between a demonstration's input and its answer."""
    demo_separator: str = "\n\n"
    """Between demonstrations, and between the last one and the query."""

    def __post_init__(self) -> None:
        problems = []
        if self.shots is not None and (not isinstance(self.shots, int) or self.shots < 0):
            problems.append(f"shots must be a whole number ≥ 0 or None (got {self.shots!r})")
        if not isinstance(self.max_input_tokens, int) or self.max_input_tokens < 8:
            problems.append(f"max_input_tokens must be a whole number ≥ 8 (got {self.max_input_tokens!r})")
        if problems:
            raise UserError("invalid in-context settings: " + "; ".join(problems))


@dataclass
class IclPrompts:
    """Prompts ready for rank classification, and what went into them."""

    examples: list[Example]
    """One per query: the prompt as input, the query's choices and label."""
    demo_indices: list[list[int]]
    """Per query, which training examples (in order) its demonstrations are."""
    limit: int
    """The input-token limit the prompts were fitted to."""
    prompt_tokens: list[int] = field(default_factory=list)
    """Tokens of each prompt (with special tokens)."""

    @property
    def shots(self) -> int | float:
        """Demonstrations per prompt: the number when all prompts agree (always when k is forced),
        else the mean, to one decimal."""
        counts = {len(d) for d in self.demo_indices}
        if len(counts) <= 1:
            return counts.pop() if counts else 0
        return round(sum(map(len, self.demo_indices)) / len(self.demo_indices), 1)

    @property
    def min_shots(self) -> int:
        return min(map(len, self.demo_indices), default=0)


def input_limit(config, tokenizer, cap: int = 1024) -> int:
    """The longest prompt the model takes: min(cap, absolute positions, tokenizer's limit)."""
    limits = [cap]
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            limits.append(value)
            break
    tok_limit = getattr(tokenizer, "model_max_length", None)
    relative = getattr(config, "model_type", "") in ("t5", "mt5", "umt5", "longt5")
    if isinstance(tok_limit, int) and 0 < tok_limit < HUGE and not relative:
        limits.append(tok_limit)
    return min(limits)


def format_demo(example: Example, config: IclConfig) -> str:
    if example.label is None:
        raise ValueError("a demonstration needs a label")
    return example.input + config.answer_separator + example.choices[example.label]


def _count(tokenizer, text: str, special: bool = False) -> int:
    return len(tokenizer(text, add_special_tokens=special)["input_ids"])


def _prompt(demos: list[str], query: Example, config: IclConfig) -> str:
    return config.demo_separator.join([*demos, query.input])


def build_prompts(
    train: Sequence[Example],
    queries: Sequence[Example],
    tokenizer,
    *,
    limit: int,
    decoder_only: bool,
    config: IclConfig | None = None,
) -> IclPrompts:
    """In-context prompts for every query: demonstrations in one seeded order, each prompt taking
    as many as fit beside its query (or exactly config.shots, whatever the limit).

    decoder_only: the choices continue the prompt in the same context window, so the longest
    choice counts against the limit too (encoder-decoder models decode choices separately).
    """
    config = config or IclConfig()
    pool = [i for i, ex in enumerate(train) if ex.label is not None]
    if not pool and (config.shots is None or config.shots > 0):
        raise UserError("in-context learning needs labelled training rows to use as demonstrations")
    order = list(pool)
    random.Random(config.seed).shuffle(order)

    if config.shots is not None:
        chosen = [order[i % len(order)] for i in range(config.shots)] if order else []
        demos = [format_demo(train[i], config) for i in chosen]
        examples = [Example(_prompt(demos, q, config), q.choices, q.label) for q in queries]
        lengths = [_count(tokenizer, ex.input, special=True) for ex in examples]
        return IclPrompts(examples, [list(chosen) for _ in queries], limit, lengths)

    sep = _count(tokenizer, config.demo_separator)
    cost = {i: _count(tokenizer, format_demo(train[i], config)) + sep for i in order}
    examples, indices, lengths = [], [], []
    for q in queries:
        # decoder-only: the choices continue the prompt in the same window, so the longest counts too
        choice = max(_count(tokenizer, c) for c in q.choices) if decoder_only else 0
        budget = limit - _count(tokenizer, q.input, special=True) - choice
        chosen = []
        for i in order:  # greedy in the seeded order: every demonstration that still fits
            if cost[i] <= budget:
                chosen.append(i)
                budget -= cost[i]
        while True:
            example = Example(_prompt([format_demo(train[i], config) for i in chosen], q, config), q.choices, q.label)
            n = _count(tokenizer, example.input, special=True)
            # Tokenisation is not exactly additive at the joins: drop demonstrations until it fits.
            if not chosen or n + choice <= limit:
                break
            chosen.pop()
        examples.append(example)
        indices.append(chosen)
        lengths.append(n)
    return IclPrompts(examples, indices, limit, lengths)


def shots_note(result: dict) -> str:
    """How many demonstrations per class the in-context prompts held, in words; 'not meaningful' below one
    per class (the model never saw an example of some answers). `result` is evaluate's in-context entry."""
    if "shots_per_class" not in result:
        return ""
    per = result["shots_per_class"]
    text = f"{result['shots']:g} demonstration{'' if result['shots'] == 1 else 's'} per prompt, {per:g} per class"
    if not result.get("meaningful", per >= 1):
        text += (": not meaningful, fewer than one example of each answer fits in the model's input (long rows "
                 "or many classes); compare with T-Few with care")
    return text
