"""Compute cost by the T-Few paper's counting (docs/TFEW.md, "FLOPs model").

A decoder-only model costs about 2N FLOPs per processed token at inference and 6N in
training (N = parameters). The paper counts an encoder-decoder at N (inference) and 3N
(training) per token, since each token passes through only one half of the parameters.
With these, T-Few on T0 (11e9 × 103 tokens) is ≈ 1.1e12 FLOPs per example and GPT-3 175B with
41 demonstrations of 98 tokens is 2 × 175e9 × (41·98 + 103) ≈ 1.4e15.
"""

from __future__ import annotations

from typing import Sequence


def flops_per_token(num_parameters: int | float, encoder_decoder: bool, training: bool = False) -> float:
    """FLOPs for one token: N or 2N at inference, 3N or 6N in training (encoder-decoder or decoder-only)."""
    factor = 1.0 if encoder_decoder else 2.0
    if training:
        factor *= 3.0
    return factor * float(num_parameters)


def inference_flops(num_parameters: int | float, tokens: int | float, encoder_decoder: bool) -> float:
    """FLOPs to process `tokens` tokens at inference."""
    return flops_per_token(num_parameters, encoder_decoder) * float(tokens)


def training_flops(num_parameters: int | float, tokens: int | float, encoder_decoder: bool) -> float:
    """FLOPs to train on `tokens` tokens (forward + backward)."""
    return flops_per_token(num_parameters, encoder_decoder, training=True) * float(tokens)


def prediction_tokens(input_tokens: int, choice_tokens: Sequence[int], encoder_decoder: bool) -> int:
    """Tokens one rank-classification prediction processes.

    Encoder-decoder: the input is encoded once and each choice decoded against it, so input +
    every choice. Decoder-only: each choice is scored as a continuation of the whole input, so
    the input is processed once per choice.
    """
    if encoder_decoder:
        return input_tokens + sum(choice_tokens)
    return sum(input_tokens + c for c in choice_tokens)


def in_context_tokens(shots: int, tokens_per_shot: int, query_tokens: int) -> int:
    """The paper's count for in-context learning: every demonstration plus the query and its choices."""
    return shots * tokens_per_shot + query_tokens
