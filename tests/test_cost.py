"""FLOPs accounting reproduces the paper's own figures (docs/TFEW.md)."""

import pytest

from ia3app.evaluation.flops import (
    flops_per_token,
    in_context_tokens,
    inference_flops,
    prediction_tokens,
    training_flops,
)


def test_tfew_inference_figure():
    # T-Few on T0 (11B, encoder-decoder), 103 tokens for input plus choices: ≈ 1.1e12.
    assert inference_flops(11e9, 103, encoder_decoder=True) == pytest.approx(1.1e12, rel=0.05)


def test_gpt3_in_context_figure():
    tokens = in_context_tokens(shots=41, tokens_per_shot=98, query_tokens=103)
    assert tokens == 41 * 98 + 103
    assert inference_flops(175e9, tokens, encoder_decoder=False) == pytest.approx(1.4e15, rel=0.05)


def test_gpt3_smaller_in_context_figures():
    tokens = in_context_tokens(41, 98, 103)
    assert inference_flops(6.7e9, tokens, False) == pytest.approx(5.4e13, rel=0.05)
    assert inference_flops(13e9, tokens, False) == pytest.approx(1.0e14, rel=0.1)


def test_training_is_three_times_inference():
    assert training_flops(10, 7, True) == 3 * inference_flops(10, 7, True) == 210
    assert training_flops(10, 7, False) == 6 * 10 * 7
    assert flops_per_token(5, encoder_decoder=False) == 10


def test_prediction_tokens_encoder_reuse():
    assert prediction_tokens(10, [2, 3], encoder_decoder=True) == 15
    assert prediction_tokens(10, [2, 3], encoder_decoder=False) == 25


def test_tfew_training_figure():
    # 1,000 steps × batch 8 × 103 tokens on T0 11B at 3N per token: ≈ 2.7e16.
    assert training_flops(11e9, 1000 * 8 * 103, encoder_decoder=True) == pytest.approx(2.7e16, rel=0.05)
