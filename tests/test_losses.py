"""T-Few losses against values worked out by hand, with padding and choices of different lengths."""

import math

import pytest
import torch

from ia3app.recipe.losses import tfew_losses

G = -9.0  # garbage in padded positions: must never count

# Example 0: 2 choices (rows 0, 1), label 0. Example 1: 3 choices (rows 2, 3, 4), label 2.
LOGPROBS = torch.tensor(
    [
        [-1.0, -2.0, G],  # row 0: correct, 2 tokens
        [-0.5, G, G],  # row 1: 1 token
        [-3.0, -1.0, -2.0],  # row 2: 3 tokens
        [-0.1, -0.2, G],  # row 3: 2 tokens
        [-0.7, G, G],  # row 4: correct, 1 token
    ]
)
MASK = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.float32)
CHOICE_INDEX = torch.tensor([[0, 1, -1], [2, 3, 4]])
LABELS = torch.tensor([0, 2])


def ul_term(lp: float) -> float:
    return -math.log(1 - math.exp(lp) + 0.01)


def expected() -> dict:
    lm = (1.0 + 2.0 + 0.7) / 3  # mean over the 3 correct-choice tokens of the batch
    incorrect = [-0.5, -3.0, -1.0, -2.0, -0.1, -0.2]
    ul = sum(ul_term(x) for x in incorrect) / len(incorrect)
    b = [-1.5, -0.5, -2.0, -0.15, -0.7]  # mean token log-prob per row
    ln0 = -(b[0] - math.log(math.exp(b[0]) + math.exp(b[1])))
    ln1 = -(b[4] - math.log(math.exp(b[2]) + math.exp(b[3]) + math.exp(b[4])))
    return {"lm": lm, "ul": ul, "ln": (ln0 + ln1) / 2}


def test_values_by_hand():
    out = tfew_losses(LOGPROBS, MASK, CHOICE_INDEX, LABELS)
    want = expected()
    for key in ("lm", "ul", "ln"):
        assert out[key].item() == pytest.approx(want[key], abs=1e-6), key
    assert out["total"].item() == pytest.approx(sum(want.values()), abs=1e-6)


def test_flags_drop_terms_but_still_report_them():
    want = expected()
    out = tfew_losses(LOGPROBS, MASK, CHOICE_INDEX, LABELS, unlikelihood=False, length_norm=False)
    assert out["total"].item() == pytest.approx(want["lm"], abs=1e-6)
    assert out["ul"].item() == pytest.approx(want["ul"], abs=1e-6)
    out = tfew_losses(LOGPROBS, MASK, CHOICE_INDEX, LABELS, length_norm=False)
    assert out["total"].item() == pytest.approx(want["lm"] + want["ul"], abs=1e-6)


def test_gradients_only_reach_real_tokens():
    lp = LOGPROBS.clone().requires_grad_(True)
    tfew_losses(lp, MASK, CHOICE_INDEX, LABELS)["total"].backward()
    assert torch.all(lp.grad[MASK == 0] == 0)
    assert torch.all(lp.grad[MASK == 1] != 0)
    # Raising the correct choice's log-prob lowers the loss; raising a wrong one's raises it.
    assert lp.grad[0, 0] < 0 and lp.grad[1, 0] > 0


def test_label_on_missing_choice_is_rejected():
    with pytest.raises(ValueError):
        tfew_losses(LOGPROBS, MASK, CHOICE_INDEX, torch.tensor([2, 0]))
