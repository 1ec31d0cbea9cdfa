"""Chat-template wrapping of prompts for instruct models (TemplateSpec.chat).

An instruct model answers best when a prompt arrives as a user turn of its chat template, the answer
being the assistant's reply. Measured on the bundled SmolLM2-135M-Instruct, zero-shot on 96 unseen
rows of T-Few's samples: SST-2 0.44 -> 0.72, RTE 0.58 -> 0.59, COPA 0.54 -> 0.56, WiC 0.50 -> 0.54
(plain -> wrapped; bench/RESULTS.md). The wrap is text: the prompt (a rendered input, or a whole
in-context prompt with its demonstrations) becomes the rendered conversation up to the assistant's
turn, and the answer choices continue it. Models without a chat template (T0, T5, the tiny ones) are
left as they are.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from ia3app.example import Example


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def wrap_text(tokenizer, text: str) -> str:
    """`text` as the user's turn, followed by the opening of the assistant's (the answer goes there)."""
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)


def applies(tokenizer, chat: bool) -> bool:
    """Whether prompts for this tokenizer are wrapped, given the template's `chat` setting."""
    return bool(chat) and has_chat_template(tokenizer)


def wrap_examples(tokenizer, examples: Sequence[Example], chat: bool) -> list[Example]:
    """Examples with their inputs wrapped when `applies(tokenizer, chat)`; unchanged otherwise."""
    if not applies(tokenizer, chat):
        return list(examples)
    return [replace(ex, input=wrap_text(tokenizer, ex.input)) for ex in examples]


def overhead_tokens(tokenizer, chat: bool) -> int:
    """Tokens the wrap adds around a prompt (0 when it does not apply): what a length budget leaves for it."""
    if not applies(tokenizer, chat):
        return 0
    return len(tokenizer(wrap_text(tokenizer, ""), add_special_tokens=False)["input_ids"])
