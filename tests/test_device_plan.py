"""The GPU memory planner's arithmetic, on the real T0 shapes (built on the meta device: no weights, no GPU)."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, T5Config

from ia3app.config import RecipeConfig
from ia3app.errors import UserError
from ia3app.recipe.device_plan import BUDGET_ENV, activation_bytes, gpu_budget_bytes, plan_memory

SHAPES = Path(__file__).parent / "fixtures" / "t0"
GB = 1e9


def t0(name):
    """(config, bf16 weight bytes) of a T0 model from its config alone."""
    config = T5Config.from_json_file(SHAPES / f"{name}.json")
    with torch.device("meta"):
        model = AutoModelForSeq2SeqLM.from_config(config)
    return config, 2 * sum(p.numel() for p in model.parameters())


def plan(config, weights, budget_gb, recipe=None, free_gb=80.0):
    """T-Few's batch: 8 examples of 256 tokens, 3 answer choices of 6 tokens, bf16 weights."""
    return plan_memory(config, recipe or RecipeConfig(batch_size=8), budget_bytes=budget_gb * GB, held_bytes=weights,
                       free_bytes=free_gb * GB, input_tokens=256, target_tokens=6, choices=3, dtype_bytes=2)


def peak(config, weights, ckpt, acc=1):
    return weights + activation_bytes(config, 8 // acc, 256, 6, 3, ckpt)


def test_t0_11b_on_a_48_gb_budget_plans_checkpointing_and_fits():
    config, weights = t0("T0pp")
    assert 11.0e9 < weights / 2 < 11.3e9  # T0pp's 11.1 B parameters
    assert peak(config, weights, ckpt=False) > 48 * GB  # the whole batch without checkpointing does not fit
    ckpt, acc, estimate_gb, room_gb = plan(config, weights, 48)
    assert (ckpt, acc) == (True, 1)
    assert peak(config, weights, ckpt=True) <= 40 * GB  # the target for T0 11B on a 48 GB budget
    assert room_gb * 2**30 == pytest.approx(0.9 * 48 * GB - weights)
    # the same model on an 80 GB card with no budget set (the card's memory is the budget): no checkpointing
    assert plan(config, weights, 80)[:2] == (False, 1)
    # free memory bounds the plan too (another process holds most of the card)
    assert plan(config, weights, 80, free_gb=30)[:2] == (True, 1)


def test_t0_3b_keeps_the_whole_batch_on_a_24_gb_budget_and_splits_it_below():
    config, weights = t0("T0_3B")
    assert 2.7e9 < weights / 2 < 2.9e9  # 2.78 B parameters
    ckpt, acc, *_ = plan(config, weights, 40)
    assert (ckpt, acc) == (False, 1)
    ckpt, acc, *_ = plan(config, weights, 12)
    assert ckpt and acc == 1 and peak(config, weights, True) <= 0.9 * 12 * GB
    # asked not to checkpoint on a small budget: micro-batches instead (the fewest that fit)
    ckpt, acc, *_ = plan(config, weights, 12, RecipeConfig(batch_size=8, activation_checkpointing="off"))
    assert not ckpt and acc > 1 and peak(config, weights, False, acc) <= 0.9 * 12 * GB
    assert peak(config, weights, False, acc // 2) > 0.9 * 12 * GB


def test_decoder_only_configs_are_estimated_too(tiny_model_dir):
    """A Llama config has no d_model / num_layers: the planner reads hidden_size / num_hidden_layers."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model_dir("llama"))
    full = activation_bytes(config, 8, 64, 4, 2, checkpointing=False)
    assert 0 < activation_bytes(config, 8, 64, 4, 2, checkpointing=True) < full
    assert activation_bytes(config, 8, 128, 4, 2, checkpointing=False) > full


def test_the_budget_setting(monkeypatch):
    monkeypatch.setenv(BUDGET_ENV, "48")
    assert gpu_budget_bytes("cuda:0") == 48 * GB  # the setting wins; the device is not asked
    for bad in ("lots", "0", "-3", "nan"):
        monkeypatch.setenv(BUDGET_ENV, bad)
        with pytest.raises(UserError, match=BUDGET_ENV):
            gpu_budget_bytes("cuda:0")
